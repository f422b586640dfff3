"""Typed OCPP events: what a watched frame means, decoded and validated once.

The relay forwards frames as text and parses only their envelopes. For the few actions HARMON-E
watches (`WATCHED_ACTIONS`), the session hands the frame (and, for an answer, the call it
answers) to `interpret`, which checks the payload against the `ocpp` package's JSON schema for
its version and turns it into values: a charger booted, a connector's status changed, a
transaction started / ended, a meter reading, the car's charging needs, a charging profile set or
cleared by the CPMS. The registry, load management and the offline journal consume these values;
none of them reads JSON.

Schema checks are lenient in one respect only: unknown properties (vendor extensions, which
chargers in the field do send) and ``format`` keywords are tolerated, because losing a connector
status for a vendor field would help nobody. Everything else — types, required fields, enums —
must hold, so that a value here can be trusted as typed. A payload that does not pass gives no
event (`interpret` returns an empty tuple); the frame itself is still relayed unchanged.

1.6 and 2.x differ in names, not in meaning; the events use one vocabulary:

* ``connector_id`` is 1.6's connectorId and 2.x's evseId (load management works per EVSE; a 2.x
  EVSE's connectors cannot charge at once). 0 means the whole charging station.
* transaction ids are strings (1.6 integers are shown in decimal).
* currents and powers are floats in A and W (2.x ``unitOfMeasure.multiplier`` applied, kW and
  kWh converted).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from harmone.ocpp.framing import MessageType
from harmone.ocpp.schemas import acceptable
from harmone.ocpp.versions import OcppVersion

__all__ = [
    "WATCHED_ACTIONS",
    "BootAnswered",
    "Booted",
    "ChargingNeeds",
    "ChargingProfile",
    "ChargingSchedule",
    "ConnectorStatusChanged",
    "Event",
    "MeterReading",
    "ProfileKind",
    "ProfilePurpose",
    "ProfileRequested",
    "ProfileSet",
    "ProfilesCleared",
    "Sample",
    "SchedulePeriod",
    "Sender",
    "TransactionEnded",
    "TransactionStarted",
    "interpret",
    "parse_charging_profile",
    "parse_timestamp",
]

log = logging.getLogger(__name__)

Sender = Literal["charger", "cpms", "harmone"]

#: Actions whose frames are interpreted; everything else passes by undecoded.
WATCHED_ACTIONS = frozenset(
    {
        "BootNotification",
        "StatusNotification",
        "StartTransaction",
        "StopTransaction",
        "MeterValues",
        "TransactionEvent",
        "NotifyEVChargingNeeds",
        "SetChargingProfile",
        "ClearChargingProfile",
    }
)


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Booted:
    """The charger sent BootNotification (what it says about itself)."""

    vendor: str | None
    model: str | None
    serial_number: str | None
    firmware_version: str | None


@dataclass(frozen=True, slots=True)
class BootAnswered:
    """The answer to a BootNotification: Accepted, Pending or Rejected (by the CPMS or, while
    it is away, by HARMON-E)."""

    accepted: bool
    status: str
    interval: int


@dataclass(frozen=True, slots=True)
class ConnectorStatusChanged:
    """A StatusNotification. `connector_id` is 1.6's connectorId or 2.x's evseId;
    `evse_connector` is 2.x's connectorId within the EVSE (None in 1.6)."""

    connector_id: int
    status: str
    evse_connector: int | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class TransactionStarted:
    """A transaction began on a connector (1.6: StartTransaction accepted by the CPMS; 2.x:
    TransactionEvent Started, or Updated for a transaction not seen start)."""

    connector_id: int
    transaction_id: str
    #: 2.x only: Charging, EVConnected, SuspendedEV, SuspendedEVSE or Idle (None if not sent).
    charging_state: str | None = None
    #: 1.6 only: the energy register at the start (StartTransaction's meterStart, Wh); not
    #: part of the event's identity (the same start, told with or without it).
    meter_start_wh: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class TransactionEnded:
    """A transaction ended (StopTransaction, TransactionEvent Ended)."""

    transaction_id: str
    connector_id: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """One sampled value, with the version differences taken out."""

    measurand: str
    value: float
    phase: str | None = None
    unit: str | None = None
    location: str = "Outlet"
    context: str | None = None


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One meterValue of a MeterValues or TransactionEvent frame. `connector_id` is None for a
    2.x TransactionEvent that names only its transaction (after the first, `evse` is optional)."""

    connector_id: int | None
    transaction_id: str | None
    timestamp: datetime | None
    samples: tuple[Sample, ...]


@dataclass(frozen=True, slots=True)
class ChargingNeeds:
    """2.x NotifyEVChargingNeeds: what the car asks for (ISO 15118)."""

    connector_id: int
    ev_max_current: float | None
    ev_min_current: float | None
    energy_wh: float | None
    departure: datetime | None


class ProfilePurpose(StrEnum):
    """A charging profile's purpose, named once for 1.6 and 2.x."""

    #: 1.6 ChargePointMaxProfile, 2.x ChargingStationMaxProfile.
    STATION_MAX = "ChargingStationMaxProfile"
    TX_DEFAULT = "TxDefaultProfile"
    TX = "TxProfile"
    #: 2.x: set by an external system (a local energy manager).
    EXTERNAL = "ChargingStationExternalConstraints"
    #: 2.1: PriorityCharging, LocalGeneration.
    PRIORITY = "PriorityCharging"
    LOCAL_GENERATION = "LocalGeneration"


class ProfileKind(StrEnum):
    ABSOLUTE = "Absolute"
    RECURRING = "Recurring"
    RELATIVE = "Relative"
    #: 2.1: one period whose limit the CSMS updates in place (UpdateDynamicSchedule).
    DYNAMIC = "Dynamic"


@dataclass(frozen=True, slots=True)
class SchedulePeriod:
    #: Seconds from the start of the schedule.
    start: int
    #: In the schedule's unit (A per phase, or W in total); None in a 2.1 period without limit.
    limit: float | None
    number_phases: int | None = None
    phase_to_use: int | None = None


@dataclass(frozen=True, slots=True)
class ChargingSchedule:
    unit: Literal["A", "W"]
    periods: tuple[SchedulePeriod, ...]
    duration: int | None = None
    start: datetime | None = None
    min_rate: float | None = None


@dataclass(frozen=True, slots=True)
class ChargingProfile:
    id: int
    stack_level: int
    purpose: ProfilePurpose
    kind: ProfileKind
    schedules: tuple[ChargingSchedule, ...]
    recurrency: Literal["Daily", "Weekly"] | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    transaction_id: str | None = None


@dataclass(frozen=True, slots=True)
class ProfileRequested:
    """A SetChargingProfile call on its way to the charger (not applied until it accepts)."""

    connector_id: int
    profile: ChargingProfile
    set_by: Sender


@dataclass(frozen=True, slots=True)
class ProfileSet:
    """The charger accepted a SetChargingProfile: from now on it applies `profile`."""

    connector_id: int
    profile: ChargingProfile
    set_by: Sender


@dataclass(frozen=True, slots=True)
class ProfilesCleared:
    """The charger accepted a ClearChargingProfile: every profile matching all the given
    criteria is gone (no criteria at all: every profile)."""

    profile_id: int | None
    connector_id: int | None
    purpose: ProfilePurpose | None
    stack_level: int | None
    set_by: Sender


Event = (
    Booted
    | BootAnswered
    | ConnectorStatusChanged
    | TransactionStarted
    | TransactionEnded
    | MeterReading
    | ChargingNeeds
    | ProfileRequested
    | ProfileSet
    | ProfilesCleared
)


# --- interpretation ----------------------------------------------------------------------------


def interpret(
    version: OcppVersion,
    sender: Sender,
    kind: MessageType,
    action: str,
    payload: Any,
    request: Any = None,
) -> tuple[Event, ...]:
    """The events one watched frame stands for.

    `sender` sent the frame; `kind` is CALL (or SEND) or CALLRESULT; `action` is the action of
    the call it is or answers; `payload` is its decoded payload and, for an answer, `request`
    the decoded payload of the call it answers. Returns () for frames that mean nothing to
    HARMON-E or do not pass their schema.
    """
    if action not in WATCHED_ACTIONS:
        return ()
    is_call = kind in (MessageType.CALL, MessageType.SEND)
    if not is_call and kind is not MessageType.CALLRESULT:
        return ()
    direction: Literal["request", "response"] = "request" if is_call else "response"
    if not acceptable(version, action, direction, payload):
        log.debug("%s %s %s does not pass its schema: no event", version, action, direction)
        return ()
    if not is_call and not acceptable(version, action, "request", request):
        return ()
    try:
        return _interpret(version, sender, is_call, action, payload, request)
    except _Unreadable as exc:
        log.debug("%s %s: %s", version, action, exc)
        return ()


class _Unreadable(Exception):
    """A schema-valid payload with a value HARMON-E cannot use (a malformed timestamp)."""


def _interpret(
    version: OcppVersion,
    sender: Sender,
    is_call: bool,
    action: str,
    p: Mapping[str, Any],
    req: Any,
) -> tuple[Event, ...]:
    v16 = version is OcppVersion.V16
    if is_call:
        if sender == "charger":
            return _charger_call(v16, action, p)
        if action == "SetChargingProfile":
            connector, profile = _profile_request(v16, p)
            return (ProfileRequested(connector, profile, sender),)
        return ()
    # An answer: who *asked* matters. The charger answers the CPMS's profile calls; the CPMS
    # (or HARMON-E standing in for it) answers the charger's calls.
    if sender == "charger":
        return _charger_answer(v16, action, p, req)
    return _central_answer(v16, action, p, req)


def _charger_call(v16: bool, action: str, p: Mapping[str, Any]) -> tuple[Event, ...]:
    if action == "BootNotification":
        if v16:
            return (
                Booted(
                    _text(p.get("chargePointVendor")),
                    _text(p.get("chargePointModel")),
                    _text(p.get("chargePointSerialNumber") or p.get("chargeBoxSerialNumber")),
                    _text(p.get("firmwareVersion")),
                ),
            )
        station = p["chargingStation"]
        return (
            Booted(
                _text(station.get("vendorName")),
                _text(station.get("model")),
                _text(station.get("serialNumber")),
                _text(station.get("firmwareVersion")),
            ),
        )
    if action == "StatusNotification":
        if v16:
            return (ConnectorStatusChanged(p["connectorId"], p["status"], None, p["errorCode"]),)
        return (ConnectorStatusChanged(p["evseId"], p["connectorStatus"], p["connectorId"]),)
    if action == "StopTransaction":
        return (TransactionEnded(str(p["transactionId"]), None, _text(p.get("reason"))),)
    if action == "MeterValues":
        connector = p["connectorId"] if v16 else p["evseId"]
        tx = p.get("transactionId")
        return _readings(connector, None if tx is None else str(tx), p["meterValue"], v16)
    if action == "TransactionEvent":
        return _transaction_event(p)
    if action == "NotifyEVChargingNeeds":
        needs = p["chargingNeeds"]
        ac = needs.get("acChargingParameters") or {}
        energy = ac.get("energyAmount")
        if energy is None:
            energy = (needs.get("dcChargingParameters") or {}).get("energyAmount")
        departure = needs.get("departureTime")
        return (
            ChargingNeeds(
                p["evseId"],
                _finite(ac.get("evMaxCurrent")),
                _finite(ac.get("evMinCurrent")),
                _finite(energy),
                None if departure is None else _timestamp(departure),
            ),
        )
    return ()


def _transaction_event(p: Mapping[str, Any]) -> tuple[Event, ...]:
    info = p["transactionInfo"]
    tx = str(info["transactionId"])
    evse = p.get("evse")
    connector = evse["id"] if evse else None
    events: list[Event] = []
    kind = p["eventType"]
    if kind in ("Started", "Updated") and connector is not None and connector > 0:
        # Updated also says "this transaction runs here": a transaction whose start was missed
        # (HARMON-E restarted, the charger reconnected) is learnt from its next update.
        events.append(TransactionStarted(connector, tx, info.get("chargingState")))
    events.extend(_readings(connector, tx, p.get("meterValue") or (), False))
    if kind == "Ended":
        events.append(TransactionEnded(tx, connector, _text(info.get("stoppedReason"))))
    return tuple(events)


def _charger_answer(v16: bool, action: str, p: Mapping[str, Any], req: Any) -> tuple[Event, ...]:
    status = p.get("status")
    if action == "SetChargingProfile":
        if status != "Accepted":
            return ()
        connector, profile = _profile_request(v16, req)
        return (ProfileSet(connector, profile, "cpms"),)
    if action == "ClearChargingProfile":
        # "Unknown": nothing matched, so nothing changed at the charger.
        if status != "Accepted":
            return ()
        return (_cleared(v16, req),)
    return ()


def _central_answer(v16: bool, action: str, p: Mapping[str, Any], req: Any) -> tuple[Event, ...]:
    if action == "BootNotification":
        return (BootAnswered(p["status"] == "Accepted", p["status"], p["interval"]),)
    if action == "StartTransaction" and v16:
        if p["idTagInfo"]["status"] != "Accepted":
            return ()
        start = float(req["meterStart"])
        return (TransactionStarted(req["connectorId"], str(p["transactionId"]), None, start),)
    return ()


def _readings(
    connector: int | None, tx: str | None, values: Sequence[Mapping[str, Any]], v16: bool = False
) -> tuple[Event, ...]:
    out: list[Event] = []
    for mv in values:
        samples = tuple(s for s in (_sample(sv, v16) for sv in mv["sampledValue"]) if s)
        if samples:
            stamp = mv.get("timestamp")
            out.append(
                MeterReading(connector, tx, None if stamp is None else _timestamp(stamp), samples)
            )
    return tuple(out)


def _sample(sv: Mapping[str, Any], v16: bool) -> Sample | None:
    measurand = sv.get("measurand", "Energy.Active.Import.Register")
    if v16:
        unit = sv.get("unit")
        value = _decimal(sv["value"])
    else:
        uom = sv.get("unitOfMeasure") or {}
        unit = uom.get("unit")
        value = _finite(sv["value"])
        if value is not None:
            value = value * 10.0 ** uom.get("multiplier", 0)
    if value is None or not math.isfinite(value):
        return None
    # One unit per quantity downstream: W, Wh and A.
    if unit in ("kW", "kWh", "kvar", "kvarh", "kVA"):
        value *= 1000.0
        unit = unit[1:]
    return Sample(
        measurand,
        value,
        sv.get("phase"),
        unit,
        sv.get("location", "Outlet"),
        sv.get("context"),
    )


def _cleared(v16: bool, req: Mapping[str, Any]) -> ProfilesCleared:
    if v16:
        purpose = req.get("chargingProfilePurpose")
        return ProfilesCleared(
            req.get("id"),
            req.get("connectorId"),
            None if purpose is None else _purpose(purpose),
            req.get("stackLevel"),
            "cpms",
        )
    criteria = req.get("chargingProfileCriteria") or {}
    purpose = criteria.get("chargingProfilePurpose")
    return ProfilesCleared(
        req.get("chargingProfileId"),
        criteria.get("evseId"),
        None if purpose is None else _purpose(purpose),
        criteria.get("stackLevel"),
        "cpms",
    )


def _profile_request(v16: bool, req: Mapping[str, Any]) -> tuple[int, ChargingProfile]:
    if v16:
        return req["connectorId"], parse_charging_profile(req["csChargingProfiles"], True)
    return req["evseId"], parse_charging_profile(req["chargingProfile"], False)


def parse_charging_profile(p: Mapping[str, Any], v16: bool) -> ChargingProfile:
    """A schema-valid chargingProfile (1.6 csChargingProfiles, 2.x chargingProfile) as a value.

    Raises `_Unreadable` (inside `interpret`) for a timestamp that is not ISO 8601.
    """
    raw_schedules = [p["chargingSchedule"]] if v16 else list(p["chargingSchedule"])
    schedules = tuple(
        ChargingSchedule(
            unit=s["chargingRateUnit"],
            periods=tuple(
                SchedulePeriod(
                    start=period["startPeriod"],
                    limit=_limit(period.get("limit")),
                    number_phases=period.get("numberPhases"),
                    phase_to_use=period.get("phaseToUse"),
                )
                for period in s["chargingSchedulePeriod"]
            ),
            duration=s.get("duration"),
            start=None if s.get("startSchedule") is None else _timestamp(s["startSchedule"]),
            min_rate=_finite(s.get("minChargingRate")),
        )
        for s in raw_schedules
    )
    tx = p.get("transactionId")
    return ChargingProfile(
        id=p["chargingProfileId"] if v16 else p["id"],
        stack_level=p["stackLevel"],
        purpose=_purpose(p["chargingProfilePurpose"]),
        kind=ProfileKind(p["chargingProfileKind"]),
        schedules=schedules,
        recurrency=p.get("recurrencyKind"),
        valid_from=None if p.get("validFrom") is None else _timestamp(p["validFrom"]),
        valid_to=None if p.get("validTo") is None else _timestamp(p["validTo"]),
        transaction_id=None if tx is None else str(tx),
    )


def _purpose(name: str) -> ProfilePurpose:
    if name == "ChargePointMaxProfile":
        return ProfilePurpose.STATION_MAX
    return ProfilePurpose(name)


# --- scalars -----------------------------------------------------------------------------------


def parse_timestamp(text: str) -> datetime | None:
    """An OCPP timestamp as an aware datetime; a time without an offset is UTC (as OCPP
    requires UTC); None if it is not ISO 8601."""
    try:
        value = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    return value


def _timestamp(text: str) -> datetime:
    value = parse_timestamp(text)
    if value is None:
        raise _Unreadable(f"not an ISO 8601 timestamp: {text[:40]!r}")
    return value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _finite(value: Any) -> float | None:
    """A JSON number as a finite float; None for anything else (a 400-digit integer too)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _limit(value: Any) -> float | None:
    """A schedule limit. An integer too large for a float is no limit at all (infinity), which
    is how a charger applies it: the profile is real and overrides others as any would."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.inf
    return _finite(value)


def _decimal(text: str) -> float | None:
    """1.6 sends sampled values as decimal strings."""
    try:
        f = float(text)
    except (ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None
