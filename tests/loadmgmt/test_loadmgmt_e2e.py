"""Load management through the relay: real sockets, ocpp-package chargers and CPMS."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from modbus_meter import meter_sim, sdm630_registers
from ocpp.v16 import call as call16
from support import client_for, harmone_server, make_site, tx_limits, wait_for

from harmone.loadmgmt.controller import Timing
from harmone.loadmgmt.model import AllocationOptions
from harmone.loadmgmt.profiles import PROFILE_ID_BASE
from harmone.sim import SimulatedCharger, SimulatedCpms
from harmone.web.serve import RunningServer


async def _api(srv: RunningServer) -> httpx.AsyncClient:
    """For tests written before tests/support.py had `client_for`, which import it from here
    (with `_tx_limits`, now `support.tx_limits`); new tests use `support`."""
    return await client_for(srv, email="lm@example.com")


_tx_limits = tx_limits

CONFIG: dict[str, Any] = {
    "policy": "equal_share",
    "resend_step": 0.5,
    "min_interval": 0,
    "tree": {"id": "grid", "max_current": 32},
    "default_charger": {"max_current": 32, "phases": 3},
}


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_two_cars_share_the_site_and_the_cpms_never_sees_profile_answers(
    tmp_path: Path, version: str
) -> None:
    async with (
        SimulatedCpms() as cpms,
        harmone_server(tmp_path) as srv,
        await client_for(srv) as api,
    ):
        site, url = await make_site(srv, cpms.url)
        r = await api.put(f"/api/v1/sites/{site.uid}/load-management", json=CONFIG)
        assert r.status_code == 200, r.text
        a = SimulatedCharger(url, "LM-A", version)
        b = SimulatedCharger(url, "LM-B", version)
        async with a, b:
            for sim in (a, b):
                await sim.boot()
                await sim.status(1, "Available")
            # TxDefaultProfile at 0 A first: nothing may charge before a grant
            await wait_for(lambda: a.current_limit(1) == 0 and b.current_limit(1) == 0, 10)
            await a.start_transaction(1, "TAG-A")
            await wait_for(lambda: a.current_limit(1) == 32, 10)
            await b.start_transaction(1, "TAG-B")
            await wait_for(lambda: a.current_limit(1) == 16 and b.current_limit(1) == 16, 10)
            assert tx_limits(a)[-1] == 16 and tx_limits(b)[-1] == 16
            await b.stop_transaction(1, wh=100)
            await wait_for(lambda: a.current_limit(1) == 32, 10)
            status = (await api.get(f"/api/v1/sites/{site.uid}/load-management/status")).json()
            assert status["nodes"][0]["limit"] == 32
            series = (await api.get(f"/api/v1/sites/{site.uid}/load-management/timeseries")).json()
            assert len(series) >= 3
        # HARMON-E's profiles and their answers never went to the CPMS
        for cpid in ("LM-A", "LM-B"):
            assert not any(
                str(PROFILE_ID_BASE)[:3] in f and "SetChargingProfile" in f
                for f in cpms.raw_frames[cpid]
            )
            assert all(f'"{"hm-"}' not in f for f in cpms.raw_frames[cpid])


async def test_cpms_profile_caps_the_grant_and_harmone_stays_on_top(tmp_path: Path) -> None:
    async with (
        SimulatedCpms() as cpms,
        harmone_server(tmp_path) as srv,
        await client_for(srv) as api,
    ):
        site, url = await make_site(srv, cpms.url)
        await api.put(f"/api/v1/sites/{site.uid}/load-management", json=CONFIG)
        async with SimulatedCharger(url, "CAP", "1.6") as sim:
            await sim.boot()
            tx = await sim.start_transaction(1, "TAG")
            await wait_for(lambda: sim.current_limit(1) == 32, 10)
            # the CPMS sets its own TxProfile, above HARMON-E's stack level, at 20 A
            result = await cpms.call(
                "CAP",
                call16.SetChargingProfile(
                    connector_id=1,
                    cs_charging_profiles={
                        "chargingProfileId": 1,
                        "stackLevel": 0,
                        "transactionId": tx,
                        "chargingProfilePurpose": "TxProfile",
                        "chargingProfileKind": "Relative",
                        "chargingSchedule": {
                            "chargingRateUnit": "A",
                            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 20}],
                        },
                    },
                ),
            )
            assert result.status == "Accepted"
            await wait_for(lambda: sim.current_limit(1) == 20, 10)
            # the site shrinks to 10 A: HARMON-E's profile (stack level 1) must win
            cfg = {**CONFIG, "tree": {"id": "grid", "max_current": 10}}
            await api.put(f"/api/v1/sites/{site.uid}/load-management", json=cfg)
            await wait_for(lambda: sim.current_limit(1) == 10, 10)
            mine = [p for p in sim.profiles if p.stack_level == 1]
            assert mine, "HARMON-E re-sent its profile above the CPMS's stack level"


async def test_invalid_configuration_is_refused_with_where(tmp_path: Path) -> None:
    async with harmone_server(tmp_path) as srv, await client_for(srv) as api:
        site, _ = await make_site(srv, None)
        bad = {**CONFIG, "chargers": {"X": {"node": "nowhere"}}}
        r = await api.put(f"/api/v1/sites/{site.uid}/load-management", json=bad)
        assert r.status_code == 422 and "nowhere" in r.json()["detail"]
        r = await api.put(
            f"/api/v1/sites/{site.uid}/load-management",
            json={"tree": {"id": "g", "max_current": -1}},
        )
        assert r.status_code == 422
        r = await api.get(f"/api/v1/sites/{site.uid}/load-management")
        assert r.status_code == 404


async def test_dynamic_limit_zero_suspends_charging(tmp_path: Path) -> None:
    async with harmone_server(tmp_path) as srv, await client_for(srv) as api:
        site, url = await make_site(srv, None)
        await api.put(f"/api/v1/sites/{site.uid}/load-management", json=CONFIG)
        async with SimulatedCharger(url, "DYN", "2.0.1") as sim:
            await sim.boot()
            await sim.start_transaction(1, "TAG")
            await wait_for(lambda: sim.current_limit(1) == 32, 10)
            r = await api.put(
                f"/api/v1/sites/{site.uid}/load-management/nodes/grid/dynamic-limit",
                json={"limit": 0},
            )
            assert r.status_code == 200
            await wait_for(lambda: sim.current_limit(1) == 0, 10)
            await api.put(
                f"/api/v1/sites/{site.uid}/load-management/nodes/grid/dynamic-limit",
                json={"limit": None},
            )
            await wait_for(lambda: sim.current_limit(1) == 32, 10)
            await asyncio.sleep(0)


FAST = {
    "load_timing": Timing(tick=0.2, reaction_grace=1.0),
    "load_options": AllocationOptions(
        meter_max_age=timedelta(seconds=1), settle_time=timedelta(seconds=1)
    ),
}


async def test_modbus_meter_building_load_and_meter_failure(tmp_path: Path) -> None:
    async with (
        meter_sim(inputs=sdm630_registers((10, 10, 10), (2300, 2300, 2300))) as meter,
        harmone_server(tmp_path, **FAST) as srv,
        await client_for(srv) as api,
    ):
        site, url = await make_site(srv, None)
        cfg = {
            **CONFIG,
            "tree": {
                "id": "grid",
                "max_current": 40,
                "safety_current": 16,
                "meter": {
                    "host": "127.0.0.1",
                    "port": meter.port,
                    "register_map": "eastron_sdm630",
                    "poll_interval": 0.1,
                    "timeout": 0.3,
                    "failures_before_failed": 2,
                },
            },
        }
        r = await api.put(f"/api/v1/sites/{site.uid}/load-management", json=cfg)
        assert r.status_code == 200, r.text
        assert r.json()["tree"]["meter"]["port"] == meter.port
        async with SimulatedCharger(url, "MET", "1.6") as sim:
            await sim.boot()
            await sim.start_transaction(1, "TAG")
            # 40 A fuse, 10 A of building load: 30 A left for the car
            await wait_for(lambda: sim.current_limit(1) == 30, 10)
            status = (await api.get(f"/api/v1/sites/{site.uid}/load-management/status")).json()
            assert status["meters"]["grid"]["health"] == "ok"
            await meter.stop()  # the meter stops answering: the node falls to 16 A
            await wait_for(lambda: sim.current_limit(1) == 16, 10)
            status = (await api.get(f"/api/v1/sites/{site.uid}/load-management/status")).json()
            assert status["meters"]["grid"]["health"] == "failed"
            assert status["nodes"][0]["limit"] == 16


async def test_pushed_readings_and_stale_meter(tmp_path: Path) -> None:
    async with harmone_server(tmp_path, **FAST) as srv, await client_for(srv) as api:
        site, url = await make_site(srv, None)
        cfg = {
            **CONFIG,
            "tree": {"id": "grid", "max_current": 32, "metered": True, "safety_current": 8},
        }
        await api.put(f"/api/v1/sites/{site.uid}/load-management", json=cfg)
        base = f"/api/v1/sites/{site.uid}/load-management/nodes"
        async with SimulatedCharger(url, "PUSH", "2.0.1") as sim:
            await sim.boot()
            await sim.start_transaction(1, "TAG")
            for _ in range(15):
                r = await api.post(f"{base}/grid/readings", json={"current": [12, 12, 12]})
                assert r.status_code == 202, r.text
                if sim.current_limit(1) == 20:
                    break
                await asyncio.sleep(0.1)
            assert sim.current_limit(1) == 20  # 32 A - 12 A of building load
            # no reading for longer than meter_max_age: safety current (8 A) holds
            await wait_for(lambda: sim.current_limit(1) == 8, 10)
            r = await api.post(f"{base}/grid/readings", json={"current": [1, 2]})
            assert r.status_code == 422
            r = await api.post(f"{base}/nope/readings", json={"current": [1, 2, 3]})
            assert r.status_code == 404
