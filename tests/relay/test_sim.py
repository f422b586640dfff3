"""The simulators against each other over real 127.0.0.1 sockets (no HARMON-E in between)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from support import PATIENCE
from websockets.exceptions import InvalidStatus

from harmone.errors import SimulatorError
from harmone.sim import OcppVersion, SimulatedCharger, SimulatedCpms
from harmone.sim.cli import run_simulate, run_simulate_cpms


@pytest.fixture
async def cpms() -> AsyncIterator[SimulatedCpms]:
    async with SimulatedCpms(transaction_id_start=100) as server:
        yield server


def _actions(cpms: SimulatedCpms, cpid: str) -> list[str]:
    return [action for action, _ in cpms.calls[cpid]]


def _profile16(limit: float, unit: str = "A", purpose: str = "TxDefaultProfile") -> dict[str, Any]:
    return {
        "chargingProfileId": 7,
        "stackLevel": 0,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Relative",
        "chargingSchedule": {
            "chargingRateUnit": unit,
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
        },
    }


def _profile201(limit: float, purpose: str = "TxDefaultProfile") -> dict[str, Any]:
    return {
        "id": 9,
        "stackLevel": 0,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Relative",
        "chargingSchedule": [
            {
                "id": 1,
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
            }
        ],
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_v16_session_is_recorded_by_the_cpms(cpms: SimulatedCpms) -> None:
    async with SimulatedCharger(cpms.url, "CP16", "1.6") as charger:
        assert charger.subprotocol == "ocpp1.6"
        boot = await charger.boot()
        assert boot.status == "Accepted"
        await charger.heartbeat()
        await charger.status(1, "Available")
        assert (await charger.authorize("TAG1")).id_tag_info["status"] == "Accepted"
        tid = await charger.start_transaction(1, "TAG1")
        assert tid == 100
        await charger.meter_values(1, 1234.0, 16.0)
        await charger.stop_transaction(1, wh=2000.0)

    assert cpms.negotiated_subprotocol["CP16"] == "ocpp1.6"
    assert _actions(cpms, "CP16") == [
        "BootNotification",
        "Heartbeat",
        "StatusNotification",
        "Authorize",
        "StartTransaction",
        "MeterValues",
        "StopTransaction",
    ]
    calls = dict(cpms.calls["CP16"])
    assert calls["BootNotification"]["chargePointVendor"] == "HARMON-E"
    assert calls["BootNotification"]["chargePointModel"] == "SimCharger"
    meter = calls["MeterValues"]
    assert meter["transactionId"] == 100
    sampled = meter["meterValue"][0]["sampledValue"]
    assert sampled[0] == {
        "context": "Sample.Periodic",
        "measurand": "Energy.Active.Import.Register",
        "value": "1234",
        "unit": "Wh",
    }
    assert [(s["phase"], s["value"]) for s in sampled[1:]] == [
        ("L1", "16.0"),
        ("L2", "16.0"),
        ("L3", "16.0"),
    ]
    assert calls["StopTransaction"]["transactionId"] == 100
    assert calls["StopTransaction"]["meterStop"] == 2000
    # Raw frames are the exact text: the first one parses to the recorded BootNotification.
    first = json.loads(cpms.raw_frames["CP16"][0])
    assert first[0] == 2 and first[2] == "BootNotification"
    assert first[3] == calls["BootNotification"]


async def test_v201_session_is_recorded_by_the_cpms(cpms: SimulatedCpms) -> None:
    async with SimulatedCharger(cpms.url, "CP201", "2.0.1", phases=1) as charger:
        assert charger.subprotocol == "ocpp2.0.1"
        assert (await charger.boot()).status == "Accepted"
        await charger.status(1, "Charging")  # a 1.6 word, sent as 2.0.1 "Occupied"
        tid = await charger.start_transaction(1, "TAG2")
        await charger.meter_values(1, 500.0, 10.0)
        await charger.stop_transaction(1)

    assert _actions(cpms, "CP201") == [
        "BootNotification",
        "StatusNotification",
        "TransactionEvent",
        "TransactionEvent",
        "TransactionEvent",
    ]
    _, boot = cpms.calls["CP201"][0]
    assert boot["chargingStation"]["vendorName"] == "HARMON-E"
    _, status = cpms.calls["CP201"][1]
    assert status["connectorStatus"] == "Occupied"
    assert (status["evseId"], status["connectorId"]) == (1, 1)
    events = [payload for _, payload in cpms.calls["CP201"][2:]]
    assert [e["eventType"] for e in events] == ["Started", "Updated", "Ended"]
    assert [e["seqNo"] for e in events] == [0, 1, 2]
    assert {e["transactionInfo"]["transactionId"] for e in events} == {tid}
    updated = events[1]["meterValue"][0]["sampledValue"]
    assert updated[0]["value"] == 500.0
    assert [(s["phase"], s["value"]) for s in updated[1:]] == [("L1", 10.0)]


async def test_v16_charging_profile_is_recorded_and_obeyed(cpms: SimulatedCpms) -> None:
    async with SimulatedCharger(cpms.url, "P16", "1.6", max_current=32.0) as charger:
        await cpms.wait_connected("P16")
        await charger.start_transaction(1, "TAG")
        assert charger.simulated_current(1) == 32.0

        answer = await cpms.call(
            "P16", call16.SetChargingProfile(connector_id=1, cs_charging_profiles=_profile16(10))
        )
        assert answer.status == "Accepted"
        action, payload = charger.received_calls[-1]
        assert action == "SetChargingProfile"
        assert payload["csChargingProfiles"]["chargingSchedule"]["chargingRateUnit"] == "A"
        assert charger.current_limit(1) == 10.0
        assert charger.simulated_current(1) == 10.0

        # 6900 W over 3 phases at 230 V is 10 A per phase; a TxProfile beats TxDefault.
        tx = _profile16(6900, unit="W", purpose="TxProfile") | {"chargingProfileId": 8}
        answer = await cpms.call(
            "P16", call16.SetChargingProfile(connector_id=1, cs_charging_profiles=tx)
        )
        assert answer.status == "Accepted"
        assert charger.current_limit(1) == pytest.approx(10.0)

        # Below the 6 A an EV needs, it stops drawing current.
        await cpms.call(
            "P16",
            call16.SetChargingProfile(
                connector_id=1, cs_charging_profiles=_profile16(0, purpose="TxProfile")
            ),
        )
        assert charger.simulated_current(1) == 0.0

        cleared = await cpms.call("P16", call16.ClearChargingProfile())
        assert cleared.status == "Accepted"
        assert charger.current_limit(1) is None
        assert (await cpms.call("P16", call16.ClearChargingProfile(id=99))).status == "Unknown"

        await charger.stop_transaction(1)
        # Outside a transaction a TxProfile is refused, as the spec requires.
        refused = await cpms.call(
            "P16",
            call16.SetChargingProfile(
                connector_id=1, cs_charging_profiles=_profile16(10, purpose="TxProfile")
            ),
        )
        assert refused.status == "Rejected"


async def test_profiles_are_ignored_when_not_obeyed(cpms: SimulatedCpms) -> None:
    async with SimulatedCharger(cpms.url, "NO", "1.6", obey_profiles=False) as charger:
        await cpms.wait_connected("NO")
        await charger.start_transaction()
        answer = await cpms.call(
            "NO", call16.SetChargingProfile(connector_id=1, cs_charging_profiles=_profile16(8))
        )
        assert answer.status == "Accepted"
        assert charger.current_limit(1) == 8.0
        assert charger.simulated_current(1) == 32.0


async def test_profile_delay_makes_the_ev_follow_a_new_limit_late(cpms: SimulatedCpms) -> None:
    # An hour's delay: whatever the machine's speed, the EV has not followed yet.
    async with SimulatedCharger(cpms.url, "LAG", "1.6", profile_delay=3600) as charger:
        await cpms.wait_connected("LAG")
        await charger.start_transaction()
        for limit in (10, 16):
            tx = _profile16(limit, purpose="TxProfile")
            await cpms.call(
                "LAG", call16.SetChargingProfile(connector_id=1, cs_charging_profiles=tx)
            )
            # the charger reports the new limit at once; the EV still draws what it did
            assert charger.current_limit(1) == limit
            assert charger.simulated_current(1) == 32.0
    # A short delay, waited out: the EV follows each new limit.
    async with SimulatedCharger(cpms.url, "LAG2", "1.6", profile_delay=0.3) as charger:
        await cpms.wait_connected("LAG2")
        await charger.start_transaction()
        for limit in (10, 16):
            tx = _profile16(limit, purpose="TxProfile")
            await cpms.call(
                "LAG2", call16.SetChargingProfile(connector_id=1, cs_charging_profiles=tx)
            )
            assert charger.current_limit(1) == limit
            await asyncio.sleep(0.35)
            assert charger.simulated_current(1) == limit
    with pytest.raises(SimulatorError):
        SimulatedCharger(cpms.url, "BAD", profile_delay=-1)


async def test_v16_central_system_calls_are_answered(cpms: SimulatedCpms) -> None:
    async with SimulatedCharger(cpms.url, "C16", "1.6", heartbeat_interval=30) as charger:
        await cpms.wait_connected("C16")

        config = await cpms.call("C16", call16.GetConfiguration(key=["HeartbeatInterval", "Nope"]))
        assert config.configuration_key == [
            {"key": "HeartbeatInterval", "readonly": False, "value": "30"}
        ]
        assert config.unknown_key == ["Nope"]
        change = call16.ChangeConfiguration(key="HeartbeatInterval", value="12")
        assert (await cpms.call("C16", change)).status == "Accepted"
        assert charger.heartbeat_interval == 12.0
        change = call16.ChangeConfiguration(key="NumberOfConnectors", value="3")
        assert (await cpms.call("C16", change)).status == "Rejected"

        start = call16.RemoteStartTransaction(id_tag="REMOTE", connector_id=1)
        assert (await cpms.call("C16", start)).status == "Accepted"
        _, started = await cpms.wait_for("C16", lambda a, _: a == "StartTransaction")
        assert started["idTag"] == "REMOTE"
        await cpms.wait_for(
            "C16", lambda a, p: a == "StatusNotification" and p["status"] == "Charging"
        )
        tid = charger.connectors[1].transaction_id
        assert tid is not None
        stop = call16.RemoteStopTransaction(transaction_id=tid)
        assert (await cpms.call("C16", stop)).status == "Accepted"
        _, stopped = await cpms.wait_for("C16", lambda a, _: a == "StopTransaction")
        assert (stopped["transactionId"], stopped["reason"]) == (tid, "Remote")
        stop = call16.RemoteStopTransaction(transaction_id=12345)
        assert (await cpms.call("C16", stop)).status == "Rejected"

        trigger = call16.TriggerMessage(requested_message="Heartbeat")
        mark = len(cpms.calls["C16"])
        assert (await cpms.call("C16", trigger)).status == "Accepted"
        await cpms.wait_for("C16", lambda a, _: a == "Heartbeat", after=mark)

        assert (await cpms.call("C16", call16.Reset(type="Soft"))).status == "Accepted"
        availability = call16.ChangeAvailability(connector_id=1, type="Inoperative")
        assert (await cpms.call("C16", availability)).status == "Accepted"
        await cpms.wait_for(
            "C16", lambda a, p: a == "StatusNotification" and p["status"] == "Unavailable"
        )
        data = await cpms.call("C16", call16.DataTransfer(vendor_id="HARMON-E", data="ping"))
        assert (data.status, data.data) == ("Accepted", "ping")
        other = await cpms.call("C16", call16.DataTransfer(vendor_id="someone"))
        assert other.status == "UnknownVendorId"
        unlock = await cpms.call("C16", call16.UnlockConnector(connector_id=1))
        assert unlock.status == "Unlocked"

        # Something the simulator does not do is answered with a CallError.
        with pytest.raises(SimulatorError) as info:
            await cpms.call("C16", call16.GetDiagnostics(location="ftp://127.0.0.1/"))
        assert info.value.__cause__ is not None
        assert getattr(info.value.__cause__, "code", None) == "NotImplemented"

    received = [action for action, _ in charger.received_calls]
    assert received[:3] == ["GetConfiguration", "ChangeConfiguration", "ChangeConfiguration"]
    assert "RemoteStartTransaction" in received and "UnlockConnector" in received


async def test_v201_central_system_calls_are_answered(cpms: SimulatedCpms) -> None:
    async with SimulatedCharger(cpms.url, "C201", "2.0.1") as charger:
        await cpms.wait_connected("C201")
        assert cpms.version("C201") == "2.0.1"

        start = call201.RequestStartTransaction(
            id_token={"idToken": "REMOTE", "type": "ISO14443"}, remote_start_id=42, evse_id=1
        )
        assert (await cpms.call("C201", start)).status == "Accepted"
        _, started = await cpms.wait_for(
            "C201", lambda a, p: a == "TransactionEvent" and p["eventType"] == "Started"
        )
        assert started["triggerReason"] == "RemoteStart"
        assert started["transactionInfo"]["remoteStartId"] == 42
        tid = started["transactionInfo"]["transactionId"]
        await cpms.wait_for(
            "C201", lambda a, p: a == "StatusNotification" and p["connectorStatus"] == "Occupied"
        )

        profile = call201.SetChargingProfile(
            evse_id=1, charging_profile=_profile201(13, "TxProfile")
        )
        assert (await cpms.call("C201", profile)).status == "Accepted"
        assert charger.received_calls[-1][0] == "SetChargingProfile"
        assert charger.simulated_current(1) == 13.0
        clear = call201.ClearChargingProfile(charging_profile_id=9)
        assert (await cpms.call("C201", clear)).status == "Accepted"

        get = call201.GetVariables(
            get_variable_data=[
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
                {"component": {"name": "Nowhere"}, "variable": {"name": "X"}},
            ]
        )
        results = (await cpms.call("C201", get)).get_variable_result
        assert results[0]["attribute_status"] == "Accepted"
        assert results[0]["attribute_value"] == "10"
        assert results[1]["attribute_status"] == "UnknownComponent"
        set_ = call201.SetVariables(
            set_variable_data=[
                {
                    "attributeValue": "20",
                    "component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": "HeartbeatInterval"},
                }
            ]
        )
        assert (await cpms.call("C201", set_)).set_variable_result[0][
            "attribute_status"
        ] == "Accepted"
        assert charger.heartbeat_interval == 20.0

        trigger = call201.TriggerMessage(requested_message="StatusNotification")
        assert (await cpms.call("C201", trigger)).status == "Accepted"
        assert (await cpms.call("C201", call201.Reset(type="Immediate"))).status == "Accepted"
        data = await cpms.call("C201", call201.DataTransfer(vendor_id="HARMON-E"))
        assert data.status == "Accepted"

        stop = call201.RequestStopTransaction(transaction_id=tid)
        assert (await cpms.call("C201", stop)).status == "Accepted"
        _, ended = await cpms.wait_for(
            "C201", lambda a, p: a == "TransactionEvent" and p["eventType"] == "Ended"
        )
        assert ended["triggerReason"] == "RemoteStop"
        assert ended["transactionInfo"]["stoppedReason"] == "Remote"
        await cpms.wait_for(
            "C201",
            lambda a, p: a == "StatusNotification" and p["connectorStatus"] == "Available",
            after=len(cpms.calls["C201"]) - 1,
        )
        availability = call201.ChangeAvailability(operational_status="Inoperative")
        assert (await cpms.call("C201", availability)).status == "Accepted"


@pytest.mark.parametrize(
    ("server", "offered", "expected"),
    [
        (["ocpp1.6", "ocpp2.0.1", "ocpp2.1"], ["ocpp2.0.1", "ocpp1.6"], "ocpp2.0.1"),
        (["ocpp1.6", "ocpp2.0.1", "ocpp2.1"], ["ocpp1.6", "ocpp2.0.1"], "ocpp1.6"),
        (["ocpp2.0.1", "ocpp1.6"], ["ocpp1.6", "ocpp2.0.1"], "ocpp1.6"),
        (["ocpp1.6"], ["ocpp2.1", "ocpp2.0.1", "ocpp1.6"], "ocpp1.6"),
        (["ocpp1.6", "ocpp2.0.1", "ocpp2.1"], ["ocpp2.1", "ocpp1.6"], "ocpp2.1"),
    ],
)
async def test_subprotocol_follows_the_client_order(
    server: list[str], offered: list[str], expected: str
) -> None:
    async with (
        SimulatedCpms(subprotocols=server) as cpms,
        SimulatedCharger(cpms.url, "NEG", "1.6", subprotocols=offered) as charger,
    ):
        assert charger.subprotocol == expected
        await cpms.wait_connected("NEG")
        assert cpms.negotiated_subprotocol["NEG"] == expected
        assert cpms.handshakes[-1].offered_subprotocols == tuple(offered)
        # The charger speaks what was negotiated (2.1 is spoken with 2.0.1 messages).
        assert (await charger.boot()).status == "Accepted"
        assert charger.version == ("1.6" if expected == "ocpp1.6" else "2.0.1")


async def test_no_common_subprotocol_is_refused_with_400() -> None:
    async with SimulatedCpms(subprotocols=["ocpp1.6"]) as cpms:
        charger = SimulatedCharger(cpms.url, "X", "2.0.1")
        with pytest.raises(InvalidStatus) as info:
            await charger.connect()
        assert info.value.response.status_code == 400
        await charger.close()


async def test_refuse_status_reaches_the_client_and_headers_are_recorded() -> None:
    async with SimulatedCpms(refuse_status=401) as cpms:
        charger = SimulatedCharger(cpms.url, "AUTH", "1.6", basic_auth=("AUTH", "s3cret"))
        with pytest.raises(InvalidStatus) as info:
            await charger.connect()
        assert info.value.response.status_code == 401
        assert not charger.connected
        expected = "Basic " + base64.b64encode(b"AUTH:s3cret").decode()
        assert cpms.request_headers["AUTH"]["Authorization"] == expected
        assert cpms.handshakes[-1].status == 401

        cpms.refuse_status = None
        async with charger:
            assert charger.connected
            await cpms.wait_connected("AUTH")
        assert cpms.handshakes[-1].status == 101
        assert cpms.handshakes[-1].subprotocol == "ocpp1.6"


async def test_accept_delay_slows_the_handshake() -> None:
    async with SimulatedCpms(accept_delay=0.5) as cpms:
        impatient = SimulatedCharger(cpms.url, "SLOW", open_timeout=0.1)
        with pytest.raises(TimeoutError):
            await impatient.connect()
        await impatient.close()
        loop = asyncio.get_running_loop()
        begin = loop.time()
        async with SimulatedCharger(cpms.url, "SLOW", open_timeout=PATIENCE) as patient:
            assert patient.connected
        assert loop.time() - begin >= 0.5


async def test_stop_and_start_on_the_same_port(cpms: SimulatedCpms) -> None:
    url = cpms.url
    charger = SimulatedCharger(url, "OUT", "1.6")
    try:
        await charger.connect()
        await cpms.wait_connected("OUT")
        await cpms.stop()
        await charger.wait_closed(timeout=5)
        assert not charger.connected
        assert not cpms.connected("OUT")
        with pytest.raises(SimulatorError):
            await charger.heartbeat()
        with pytest.raises(ConnectionRefusedError):
            await SimulatedCharger(url, "OUT2").connect()

        await cpms.start()
        assert cpms.url == url
        await charger.connect()
        await cpms.wait_connected("OUT")
        await charger.boot()
        assert cpms.connection_count["OUT"] == 2
    finally:
        await charger.close()


async def test_raw_frames_are_exact_both_ways(cpms: SimulatedCpms) -> None:
    async with SimulatedCharger(cpms.url, "RAW", "1.6") as charger:
        await cpms.wait_connected("RAW")
        frame = '[2, "raw-1", "DataTransfer", {"vendorId": "HARMON-E", "data": "é"}]'
        await cpms.send_raw("RAW", frame)
        answer = await cpms.wait_for_frame("RAW", lambda f: '"raw-1"' in f)
        assert json.loads(answer) == [3, "raw-1", {"status": "Accepted", "data": "é"}]
        assert charger.received_calls == [("DataTransfer", {"vendorId": "HARMON-E", "data": "é"})]
        assert charger.raw_frames == [frame]
        # An answer to nothing the charger asked is dropped, not mistaken for a later answer.
        await cpms.send_raw("RAW", '[3,"not-ours",{}]')
        assert (await charger.heartbeat()).current_time
        # The charger's own frames arrive exactly as its websocket sent them.
        await charger.heartbeat()
        text = await cpms.wait_for_frame("RAW", lambda f: "Heartbeat" in f)
        assert text.startswith("[2,") and text.endswith(',"Heartbeat",{}]')


async def test_unknown_actions_get_a_call_error(cpms: SimulatedCpms) -> None:
    async with SimulatedCharger(cpms.url, "UNK", "2.0.1") as charger:
        await cpms.wait_connected("UNK")
        await cpms.send_raw("UNK", '[2,"u-1","NoSuchAction",{}]')
        answer = json.loads(await cpms.wait_for_frame("UNK", lambda f: '"u-1"' in f))
        assert answer[:3] == [4, "u-1", "NotSupported"]
        await cpms.send_raw("UNK", '[2,"u-2","GetLog",{}]')
        answer = json.loads(await cpms.wait_for_frame("UNK", lambda f: '"u-2"' in f))
        assert answer[:3] == [4, "u-2", "NotImplemented"]
        # And the other way round: the CPMS answers what it does not simulate.
        assert charger.websocket is not None
        await charger.websocket.send('[2,"u-3","Get15118EVCertificate",{}]')
        await cpms.wait_for("UNK", lambda a, _: a == "Get15118EVCertificate")


async def test_cpms_reports_missing_chargers_and_timeouts(cpms: SimulatedCpms) -> None:
    with pytest.raises(SimulatorError):
        await cpms.call("GHOST", call16.Heartbeat())
    with pytest.raises(SimulatorError):
        await cpms.wait_for("GHOST", lambda a, p: True, timeout=0.1)
    with pytest.raises(SimulatorError):
        await cpms.wait_connected("GHOST", timeout=0.1)


async def test_cpms_disconnects_one_charger(cpms: SimulatedCpms) -> None:
    async with SimulatedCharger(cpms.url, "KICK") as charger:
        await cpms.wait_connected("KICK")
        await cpms.disconnect("KICK", 4000, "bye")
        await charger.wait_closed(timeout=5)
        assert charger.websocket is not None
        assert charger.websocket.close_code == 4000


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_run_scenario_plays_a_bounded_session(
    cpms: SimulatedCpms, version: OcppVersion
) -> None:
    charger = SimulatedCharger(
        cpms.url, f"SCN{version}", version, heartbeat_interval=0.3, meter_interval=0.2
    )
    loop = asyncio.get_running_loop()
    begin = loop.time()
    try:
        await charger.run_scenario(2.0, start_after=0.3, stop_before=0.4)
        # it played its whole duration and left no transaction running
        assert loop.time() - begin >= 2.0
        assert charger.connected
        assert all(c.transaction_id is None for c in charger.connectors.values())
    finally:
        await charger.close()
    actions = _actions(cpms, f"SCN{version}")
    assert actions[0] == "BootNotification"
    assert actions.count("Heartbeat") >= 3
    if version == "1.6":
        assert actions.count("StartTransaction") == actions.count("StopTransaction") == 1
        assert actions.count("MeterValues") >= 3
    else:
        events = [p["eventType"] for a, p in cpms.calls[f"SCN{version}"] if a == "TransactionEvent"]
        assert events[0] == "Started" and events[-1] == "Ended"
        assert events.count("Updated") >= 3
    assert charger.transactions_started == 1


async def test_scenario_follows_the_profile_limit(cpms: SimulatedCpms) -> None:
    async with SimulatedCharger(cpms.url, "LIM", meter_interval=0.1, phases=1) as charger:
        scenario = asyncio.create_task(charger.run_scenario(1.5, start_after=0.1, stop_before=0.3))
        await cpms.wait_for("LIM", lambda a, _: a == "StartTransaction")
        await cpms.wait_connected("LIM")
        profile = _profile16(0, purpose="TxDefaultProfile")
        await cpms.call(
            "LIM", call16.SetChargingProfile(connector_id=0, cs_charging_profiles=profile)
        )
        await cpms.wait_for(
            "LIM", lambda a, p: a == "StatusNotification" and p["status"] == "SuspendedEVSE"
        )
        await scenario


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_cli_simulate_runs_and_returns_0(
    cpms: SimulatedCpms, version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = await run_simulate(
        url=cpms.url, chargers=2, version=version, prefix="T", duration=2.0, heartbeat=0.5
    )
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["T0001", "ok"], ["T0002", "ok"]]
    assert f"subprotocol=ocpp{version}" in lines[0]
    for cpid in ("T0001", "T0002"):
        assert _actions(cpms, cpid)[0] == "BootNotification"
        assert "Heartbeat" in _actions(cpms, cpid)
    await cpms.wait_disconnected("T0001")


async def test_cli_simulate_stops_cleanly_on_sigint(
    cpms: SimulatedCpms, capsys: pytest.CaptureFixture[str]
) -> None:
    async def interrupt() -> None:
        # run_simulate has its signal handlers in place before any charger connects.
        await cpms.wait_connected("INT0001")
        os.kill(os.getpid(), signal.SIGINT)

    killer = asyncio.create_task(interrupt())
    loop = asyncio.get_running_loop()
    begin = loop.time()
    rc = await run_simulate(
        url=cpms.url, chargers=1, version="1.6", prefix="INT", duration=600.0, heartbeat=300.0
    )
    await killer
    assert rc == 0
    assert loop.time() - begin < 600  # it stopped on the signal, not at the end of its run
    assert capsys.readouterr().out.startswith("INT0001 ok")
    await cpms.wait_disconnected("INT0001")


async def test_cli_simulate_returns_1_when_chargers_cannot_connect(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"ws://127.0.0.1:{_free_port()}"
    rc = await run_simulate(url=url, chargers=1, version="1.6", duration=1.0, heartbeat=1.0)
    assert rc == 1
    assert "FAILED" in capsys.readouterr().out


async def test_cli_simulate_cpms_logs_every_message(capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    # it runs until its duration is over or a signal stops it: here the signal, once done
    server = asyncio.create_task(run_simulate_cpms("127.0.0.1", port, 600.0))
    charger = SimulatedCharger(f"ws://127.0.0.1:{port}", "LOG")
    try:
        while not server.done():  # the server task needs a moment to listen
            try:
                await charger.connect()
                break
            except OSError:
                await asyncio.sleep(0.05)
        await charger.boot()
        await charger.heartbeat()
    finally:
        await charger.close()
    os.kill(os.getpid(), signal.SIGINT)
    assert await server == 0
    lines = capsys.readouterr().out.splitlines()
    cpid, action, payload = lines[0].split(" ", 2)
    assert (cpid, action) == ("LOG", "BootNotification")
    assert json.loads(payload)["chargePointVendor"] == "HARMON-E"
    assert lines[1] == "LOG Heartbeat {}"
