"""The live state fills the allocator's `Demand` history and intent from OCPP frames (issue 9
points 6 and 7): energy delivered, running / paused, the limit in force, departure and energy
need; and a restart (snapshot round trip) keeps them. Frames are decoded by the real
`interpret`, so each case is what a 1.6 or 2.0.1 charger would send."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from harmone.loadmgmt.config import parse_config
from harmone.loadmgmt.model import AllocationOptions, Demand
from harmone.loadmgmt.snapshot import restore, snapshot
from harmone.loadmgmt.state import SiteLoadState, Timing
from harmone.ocpp.events import interpret
from harmone.ocpp.framing import MessageType
from harmone.ocpp.versions import OcppVersion

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
TIMING = Timing(apply_bound=5.0)
CONFIG = parse_config(
    {
        "min_interval": 0,
        "tree": {"id": "grid", "max_current": 32},
        "chargers": {
            "D": {"max_current": 32, "default_dwell_minutes": 240, "default_energy_kwh": 20}
        },
        "default_charger": {"max_current": 32},
    }
)
V16, V201 = OcppVersion.V16, OcppVersion.V201
CALL, RESULT = MessageType.CALL, MessageType.CALLRESULT


def _at(t: float) -> datetime:
    return NOW + timedelta(seconds=t)


def _iso(t: float) -> str:
    return _at(t).isoformat().replace("+00:00", "Z")


def _feed(
    state: SiteLoadState,
    cid: str,
    t: float,
    action: str,
    payload: dict[str, Any],
    request: dict[str, Any] | None = None,
) -> None:
    version = state.chargers[cid].version
    if request is None:
        events = interpret(version, "charger", CALL, action, payload)
    else:
        events = interpret(version, "cpms", RESULT, action, payload, request)
    assert events, (action, payload)
    for e in events:
        state.apply(cid, e, CONFIG.settings_for(cid), TIMING, _at(t))


def _demand(state: SiteLoadState, cid: str, t: float) -> Demand:
    (d,) = [d for d in state.demands(CONFIG, _at(t)) if d.charger_id == cid]
    return d


def _grant(state: SiteLoadState, cid: str, tx: str, amps: float, t: float) -> None:
    state.call_sent(cid, 1, amps, _at(t))
    state.call_accepted(cid, 1, tx, amps, None, CONFIG.settings_for(cid), TIMING, _at(t))


def _connect(state: SiteLoadState, cid: str, version: OcppVersion) -> None:
    """The charger connects and accepts its TxDefaultProfile of 0 A."""
    state.connected(cid, version, booted=True)
    state.call_sent(cid, 1, None, _at(0))
    state.call_accepted(cid, 1, None, 0.0, None, CONFIG.settings_for(cid), TIMING, _at(0))


def _start16(state: SiteLoadState, cid: str, t: float, meter_start: int, tx: int = 7) -> None:
    _connect(state, cid, V16)
    request = {"connectorId": 1, "idTag": "T", "meterStart": meter_start, "timestamp": _iso(t)}
    answer = {"idTagInfo": {"status": "Accepted"}, "transactionId": tx}
    _feed(state, cid, t, "StartTransaction", answer, request)


def _meter16(state: SiteLoadState, cid: str, t: float, **values: float) -> None:
    sampled = []
    if "wh" in values:
        sampled.append({"value": str(values["wh"]), "measurand": "Energy.Active.Import.Register"})
    if "amps" in values:
        sampled += [
            {"value": str(values["amps"]), "measurand": "Current.Import", "phase": p, "unit": "A"}
            for p in ("L1", "L2", "L3")
        ]
    payload = {
        "connectorId": 1,
        "transactionId": 7,
        "meterValue": [{"timestamp": _iso(t), "sampledValue": sampled}],
    }
    _feed(state, cid, t, "MeterValues", payload)


def test_16_energy_delivered_is_the_register_minus_meter_start() -> None:
    state = SiteLoadState()
    _start16(state, "A", 0, meter_start=12_000)
    assert _demand(state, "A", 0).energy_delivered == 0
    _meter16(state, "A", 60, wh=12_400, amps=16)
    _meter16(state, "A", 120, wh=13_100, amps=16)
    # From meterStart, not from the first reading (which came 400 Wh late).
    assert _demand(state, "A", 120).energy_delivered == 1100


def test_16_without_a_register_energy_is_integrated_from_current_and_voltage() -> None:
    state = SiteLoadState()
    _start16(state, "A", 0, meter_start=0)
    _meter16(state, "A", 0, amps=16)
    _meter16(state, "A", 60, amps=16)
    _meter16(state, "A", 120, amps=8)
    # 16 A x 3 phases x 230 V for a minute, then a ramp from 16 to 8 A for a minute.
    expected = 16 * 3 * 230 / 60 + 12 * 3 * 230 / 60
    assert abs(_demand(state, "A", 120).energy_delivered - expected) < 1e-6


def test_running_and_paused_follow_the_accepted_grants() -> None:
    state = SiteLoadState()
    _start16(state, "A", 0, meter_start=0)
    d = _demand(state, "A", 0)
    assert d.running_since is None and d.paused_since is None  # waiting since it arrived
    _grant(state, "A", "7", 0.0, 5)  # held at 0 A from the start: still waiting since arrival
    d = _demand(state, "A", 5)
    assert d.running_since is None and d.paused_since is None
    _grant(state, "A", "7", 10.0, 10)
    assert _demand(state, "A", 10).running_since == _at(10)
    _grant(state, "A", "7", 16.0, 20)  # a raise does not restart the run
    d = _demand(state, "A", 20)
    assert d.running_since == _at(10) and d.paused_since is None
    _grant(state, "A", "7", 0.0, 30)
    d = _demand(state, "A", 30)
    assert d.running_since is None and d.paused_since == _at(30)
    _grant(state, "A", "7", 6.0, 50)
    d = _demand(state, "A", 50)
    assert d.running_since == _at(50) and d.paused_since is None
    # A sent grant that is not (yet) accepted changes nothing.
    state.call_sent("A", 1, 0.0, _at(60))
    assert _demand(state, "A", 60).running_since == _at(50)


def test_the_limit_in_force_is_the_accepted_one_once_applied_since_it_last_moved() -> None:
    state = SiteLoadState()
    _start16(state, "A", 0, meter_start=0)
    assert _demand(state, "A", 0).limit_in_force is None
    _grant(state, "A", "7", 16.0, 10)
    d = _demand(state, "A", 10)
    assert (d.limit_in_force, d.limit_since) == (16.0, _at(10))
    _grant(state, "A", "7", 16.0, 20)  # sent again (a reconnect): in force since 10
    assert _demand(state, "A", 20).limit_since == _at(10)
    _grant(state, "A", "7", 8.0, 30)  # a decrease is in force only once applied
    assert _demand(state, "A", 31).limit_in_force is None
    state.review(CONFIG, TIMING, AllocationOptions(), _at(30 + TIMING.apply_bound))
    d = _demand(state, "A", 36)
    assert (d.limit_in_force, d.limit_since) == (8.0, _at(30))


def test_operator_defaults_give_a_16_car_a_departure_and_an_energy_need() -> None:
    state = SiteLoadState()
    _start16(state, "D", 0, meter_start=1000)
    _meter16(state, "D", 600, wh=6000)
    d = _demand(state, "D", 600)
    assert d.departure == _at(0) + timedelta(minutes=240)
    assert d.energy_needed == 20_000 - 5000
    _start16(state, "A", 0, meter_start=0)  # a charger without defaults: nothing known
    d = _demand(state, "A", 600)
    assert d.departure is None and d.energy_needed is None


def _tx_event(kind: str, t: float, seq: int, wh: float, evse: bool = True) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "eventType": kind,
        "timestamp": _iso(t),
        "triggerReason": "CablePluggedIn" if kind == "Started" else "MeterValuePeriodic",
        "seqNo": seq,
        "transactionInfo": {"transactionId": "T1", "chargingState": "Charging"},
        "meterValue": [
            {
                "timestamp": _iso(t),
                "sampledValue": [{"value": wh, "measurand": "Energy.Active.Import.Register"}],
            }
        ],
    }
    if evse:
        payload["evse"] = {"id": 1, "connectorId": 1}
    return payload


def _needs(departure: float, energy: float) -> dict[str, Any]:
    return {
        "evseId": 1,
        "chargingNeeds": {
            "requestedEnergyTransfer": "AC_three_phase",
            "departureTime": _iso(departure),
            "acChargingParameters": {
                "energyAmount": energy,
                "evMinCurrent": 6,
                "evMaxCurrent": 16,
                "evMaxVoltage": 400,
            },
        },
    }


def test_201_needs_give_the_departure_and_what_is_still_needed() -> None:
    state = SiteLoadState()
    _connect(state, "B", V201)
    _feed(state, "B", 0, "TransactionEvent", _tx_event("Started", 0, 0, 50_000))
    _feed(state, "B", 1, "NotifyEVChargingNeeds", _needs(3 * 3600, 18_000))
    d = _demand(state, "B", 1)
    assert d.departure == _at(3 * 3600)
    assert d.energy_needed == 18_000
    assert d.car_max == 16
    _feed(state, "B", 900, "TransactionEvent", _tx_event("Updated", 900, 1, 54_000, evse=False))
    d = _demand(state, "B", 900)
    assert d.energy_delivered == 4000
    assert d.energy_needed == 14_000  # asked for 18 kWh, 4 kWh delivered since
    # A new need replaces the old, counted from what was delivered when it was told.
    _feed(state, "B", 901, "NotifyEVChargingNeeds", _needs(2 * 3600, 10_000))
    d = _demand(state, "B", 901)
    assert (d.departure, d.energy_needed) == (_at(2 * 3600), 10_000)


def test_201_needs_beat_the_operator_defaults() -> None:
    state = SiteLoadState()
    _connect(state, "D", V201)
    _feed(state, "D", 0, "TransactionEvent", _tx_event("Started", 0, 0, 0))
    assert _demand(state, "D", 0).departure == _at(0) + timedelta(minutes=240)
    _feed(state, "D", 1, "NotifyEVChargingNeeds", _needs(3600, 5000))
    d = _demand(state, "D", 1)
    assert (d.departure, d.energy_needed) == (_at(3600), 5000)


def test_a_restart_keeps_turns_energy_and_needs() -> None:
    """Point 7: the snapshot (as JSON, as the store keeps it) restores every filled field, so a
    restart neither resets whose turn it is nor forgets a departure."""
    state = SiteLoadState()
    _start16(state, "A", 0, meter_start=0, tx=7)
    _meter16(state, "A", 0, amps=16)
    _meter16(state, "A", 60, amps=16)
    _grant(state, "A", "7", 16.0, 10)
    _grant(state, "A", "7", 0.0, 3000)  # A's turn ended: paused
    _connect(state, "B", V201)
    _feed(state, "B", 0, "TransactionEvent", _tx_event("Started", 0, 0, 1000))
    _feed(state, "B", 1, "NotifyEVChargingNeeds", _needs(3 * 3600, 18_000))
    _grant(state, "B", "T1", 10.0, 3000)
    _feed(state, "B", 3100, "TransactionEvent", _tx_event("Updated", 3100, 1, 3000))
    _start16(state, "D", 100, meter_start=500, tx=9)
    state.review(CONFIG, TIMING, AllocationOptions(), _at(3200))  # the decrease applied
    before = sorted(state.demands(CONFIG, _at(3200)), key=lambda d: d.key)
    assert before[0].paused_since == _at(3000) and before[1].running_since == _at(3000)

    restored = restore(json.loads(json.dumps(snapshot(state))))
    after = sorted(restored.demands(CONFIG, _at(3200)), key=lambda d: d.key)
    fields = (
        "charging_since",
        "running_since",
        "paused_since",
        "energy_delivered",
        "departure",
        "energy_needed",
        "limit_in_force",
        "limit_since",
    )
    assert [[getattr(d, f) for f in fields] for d in after] == [
        [getattr(d, f) for f in fields] for d in before
    ]
    # The energy register counts on from the restored start, and the pause goes on.
    _meter16(restored, "D", 3300, wh=2500)
    assert _demand(restored, "D", 3300).energy_delivered == 2000
    assert _demand(restored, "A", 3300).paused_since == _at(3000)
