"""Chargers and a CPMS simulated with the `ocpp` package, relayed by HARMON-E (1.6 and 2.0.1)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from support import PATIENCE, harmone_server, make_site, wait_for

from harmone.errors import SimulatorError
from harmone.sim import SimulatedCharger, SimulatedCpms
from harmone.sim.cli import run_simulate

VERSIONS = ["1.6", "2.0.1"]


def _profile(version: str, limit: float) -> Any:
    if version == "1.6":
        return call16.SetChargingProfile(
            connector_id=1,
            cs_charging_profiles={
                "chargingProfileId": 1,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Relative",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
                },
            },
        )
    return call201.SetChargingProfile(
        evse_id=1,
        charging_profile={
            "id": 1,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": [
                {
                    "id": 1,
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
                }
            ],
        },
    )


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_full_session_is_relayed_and_registered(tmp_path: Path, version: str) -> None:
    async with SimulatedCpms(transaction_id_start=500) as cpms, harmone_server(tmp_path) as srv:
        site, url = await make_site(srv, cpms.url)
        async with SimulatedCharger(url, "SIM-1", version, serial_number="SN-42") as sim:
            boot = await sim.boot()
            assert sim.subprotocol == f"ocpp{version}"
            await sim.status(1, "Available")
            tx = await sim.start_transaction(1, "TAG-1")
            if version == "1.6":
                assert tx == 500  # the CPMS's transaction id, unchanged
            await sim.meter_values(1, 1500.0, [16.0, 16.0, 16.0])
            await sim.stop_transaction(1, wh=3000.0)
            # everything the charger said reached the CPMS, in order
            actions = [a for a, _ in cpms.calls["SIM-1"]]
            expected_tx = (
                ["StartTransaction", "MeterValues", "StopTransaction"]
                if version == "1.6"
                else ["TransactionEvent"] * 3
            )
            assert actions == ["BootNotification", "StatusNotification", *expected_tx]
            assert boot.status == "Accepted"
            # a CPMS call reaches the charger and its answer comes back
            result = await cpms.call("SIM-1", _profile(version, 10.0))
            assert result.status == "Accepted"
            assert sim.received_calls[-1][0] == "SetChargingProfile"
            live = srv.runtime.hub.live_state(site.uid, "SIM-1")
            assert live is not None and live.identity.vendor == "HARMON-E"
            assert live.identity.serial_number == "SN-42" and live.ocpp_version == version
            assert live.connectors[1][0] in ("Available", "Charging", "Occupied")
        await wait_for(lambda: not srv.runtime.hub.links)
        await wait_for(lambda: not cpms.connected("SIM-1"))


@pytest.mark.parametrize("version", VERSIONS)
async def test_calls_queued_for_the_charger_are_each_delivered_once_in_order(
    tmp_path: Path, version: str
) -> None:
    """CPMS calls sent back to back, with one of HARMON-E's own calls among them, wait for
    the one CALL-in-flight slot: the charger gets each exactly once, the CPMS's in the order
    sent; the CPMS gets each answer exactly once and never the own call's."""
    async with SimulatedCpms() as cpms, harmone_server(tmp_path) as srv:
        site, url = await make_site(srv, cpms.url)
        async with SimulatedCharger(url, "SIM-Q", version) as sim:
            await sim.boot()
            ids = [f"q-{i}" for i in range(6)]
            own = asyncio.create_task(
                srv.runtime.hub.call(
                    site.uid, "SIM-Q", "DataTransfer", {"vendorId": "HARMON-E", "data": "own"}
                )
            )
            for msg_id in ids:  # no waiting in between: they queue up behind each other
                frame = [2, msg_id, "DataTransfer", {"vendorId": "HARMON-E", "data": msg_id}]
                await cpms.send_raw("SIM-Q", json.dumps(frame))
            assert await own == {"status": "Accepted", "data": "own"}
            try:
                await cpms.wait_for_frame("SIM-Q", lambda f: json.loads(f)[:2] == [3, ids[-1]])
            except SimulatorError:
                got = [p["data"] for a, p in sim.received_calls if a == "DataTransfer"]
                raise AssertionError(f"the charger got only {got} of {ids}") from None
            await sim.heartbeat()  # the CPMS has now seen every frame the charger sent before
            data = [p["data"] for a, p in sim.received_calls if a == "DataTransfer"]
            assert sorted(data) == sorted([*ids, "own"]) and len(data) == len(ids) + 1
            assert [d for d in data if d != "own"] == ids
            answers = [json.loads(f) for f in cpms.raw_frames["SIM-Q"]]
            answers = [a for a in answers if a[0] in (3, 4)]
            assert [a[1] for a in answers] == ids
            assert all(a[2] == {"status": "Accepted", "data": a[1]} for a in answers), answers


async def test_cpms_frames_reach_the_charger_byte_exact(tmp_path: Path) -> None:
    async with SimulatedCpms() as cpms, harmone_server(tmp_path) as srv:
        _, url = await make_site(srv, cpms.url)
        async with SimulatedCharger(url, "SIM-2", "1.6") as sim:
            await sim.boot()
            odd = '[2, "cpms-x" , "DataTransfer",{"vendorId" : "acme",  "data":"\\u00e9"}]'
            await cpms.send_raw("SIM-2", odd)
            await wait_for(lambda: odd in sim.raw_frames)


async def test_standalone_site_serves_a_whole_scenario(tmp_path: Path) -> None:
    async with harmone_server(tmp_path) as srv:
        _, url = await make_site(srv, None)
        for version in VERSIONS:
            async with SimulatedCharger(url, f"SOLO-{version}", version) as sim:
                await sim.boot()
                assert sim.boot_status == "Accepted"
                await sim.status(1, "Available")
                tx = await sim.start_transaction(1, "TAG")
                assert tx
                await sim.meter_values(1, 100.0, 16.0)
                await sim.stop_transaction(1, wh=200.0)


async def test_quick_start_simulate_command_through_harmone(tmp_path: Path) -> None:
    async with SimulatedCpms() as cpms, harmone_server(tmp_path) as srv:
        site, url = await make_site(srv, cpms.url)
        code = await run_simulate(
            url=url, chargers=3, version="2.0.1", prefix="QS", duration=1.0, heartbeat=0.5
        )
        assert code == 0
        for i in (1, 2, 3):
            assert any(a == "BootNotification" for a, _ in cpms.calls[f"QS{i:04d}"])
        chargers = await srv.runtime.store.chargers.of_site(site.uid)
        assert sorted(c.id for c in chargers) == ["QS0001", "QS0002", "QS0003"]


async def test_one_charger_failing_does_not_disturb_the_others(tmp_path: Path) -> None:
    async with SimulatedCpms() as cpms, harmone_server(tmp_path) as srv:
        site, url = await make_site(srv, cpms.url)
        sims = [SimulatedCharger(url, f"OK-{i}", "1.6") for i in range(5)]
        for s in sims:
            await s.connect()
        await srv.runtime.hub.links[(site.uid, "OK-0")].close(1011, "test: kill one charger")
        await sims[0].wait_closed(PATIENCE)
        await asyncio.gather(*(s.heartbeat() for s in sims[1:]))
        assert {cpid for cpid, calls in cpms.calls.items() if calls} == {
            f"OK-{i}" for i in range(1, 5)
        }
        assert not cpms.connected("OK-0") and all(cpms.connected(f"OK-{i}") for i in range(1, 5))
        for s in sims:
            await s.close()
