"""What load management learns from relayed OCPP traffic, 1.6 and 2.0.1/2.1 alike.

Pure functions from a decoded payload to small facts: a transaction started or ended on a
connector, a current reading per charger phase, a cap the CPMS put on a connector, the car's
maximum. The controller turns these into `Demand`s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CpmsCap",
    "Reading",
    "TxEnded",
    "TxStarted",
    "cpms_cap",
    "cpms_clear",
    "reading_from_sampled_values",
]

_PHASE_INDEX = {"L1": 0, "L2": 1, "L3": 2, "L1-N": 0, "L2-N": 1, "L3-N": 2}


@dataclass(frozen=True, slots=True)
class TxStarted:
    connector_id: int
    transaction_id: str


@dataclass(frozen=True, slots=True)
class TxEnded:
    transaction_id: str
    connector_id: int | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """Current per charger phase (A) on a connector, from MeterValues or TransactionEvent."""

    connector_id: int
    amps: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class CpmsCap:
    """A limit the CPMS's own SetChargingProfile puts on a connector (0: the whole charger)."""

    connector_id: int
    purpose: str
    stack_level: int
    amps: float | None  # None: a profile HARMON-E could not read as a limit


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int of 400 digits
        return None
    return f if f == f and abs(f) != float("inf") else None


def reading_from_sampled_values(
    connector_id: int, sampled: Iterable[Mapping[str, Any]], phases: int, voltage: float
) -> Reading | None:
    """Per-phase current from one meterValue's sampledValues.

    Current.Import per phase wins; a phase-less Current.Import is taken as each phase's current;
    Power.Active.Import (W or kW) is converted with the configured voltage when no current is
    reported. Returns None when the sample holds neither.
    """
    per_phase: dict[int, float] = {}
    total_current: float | None = None
    power: dict[int, float] = {}
    total_power: float | None = None
    for sv in sampled:
        if not isinstance(sv, Mapping):
            continue
        measurand = sv.get("measurand", "Energy.Active.Import.Register")
        value = _float(sv.get("value"))
        if value is None:
            continue
        phase = sv.get("phase")
        unit = sv.get("unit") or (sv.get("unitOfMeasure") or {}).get("unit")
        if measurand == "Current.Import":
            if phase in _PHASE_INDEX:
                per_phase[_PHASE_INDEX[phase]] = value
            elif phase is None:
                total_current = value
        elif measurand == "Power.Active.Import":
            watts = value * 1000 if unit == "kW" else value
            if phase in _PHASE_INDEX:
                power[_PHASE_INDEX[phase]] = watts
            elif phase is None:
                total_power = watts
    if per_phase:
        amps = tuple(max(0.0, per_phase.get(i, 0.0)) for i in range(phases))
    elif total_current is not None:
        amps = (max(0.0, total_current),) * phases
    elif power:
        amps = tuple(max(0.0, power.get(i, 0.0) / voltage) for i in range(phases))
    elif total_power is not None:
        amps = (max(0.0, total_power / voltage / phases),) * phases
    else:
        return None
    return Reading(connector_id, amps)


def _first_period_limit(schedule: Mapping[str, Any], phases: int, voltage: float) -> float | None:
    periods = schedule.get("chargingSchedulePeriod")
    if not isinstance(periods, list) or not periods:
        return None
    # The lowest limit of the schedule: HARMON-E does not follow the CPMS's schedule over time,
    # so it honours the strictest moment of it.
    limits = [_float(p.get("limit")) for p in periods if isinstance(p, Mapping)]
    valid = [x for x in limits if x is not None and x >= 0]
    if not valid:
        return None
    low = min(valid)
    if schedule.get("chargingRateUnit") == "W":
        return low / voltage / phases
    return low


def cpms_cap(payload: Any, is_16: bool, phases: int, voltage: float) -> CpmsCap | None:
    """Read the CPMS's SetChargingProfile request as a cap on a connector."""
    if not isinstance(payload, Mapping):
        return None
    if is_16:
        connector, profile = payload.get("connectorId"), payload.get("csChargingProfiles")
        schedule = profile.get("chargingSchedule") if isinstance(profile, Mapping) else None
    else:
        connector, profile = payload.get("evseId"), payload.get("chargingProfile")
        schedules = profile.get("chargingSchedule") if isinstance(profile, Mapping) else None
        schedule = schedules[0] if isinstance(schedules, list) and schedules else None
    if not isinstance(connector, int) or not isinstance(profile, Mapping):
        return None
    stack = profile.get("stackLevel")
    amps = _first_period_limit(schedule, phases, voltage) if isinstance(schedule, Mapping) else None
    return CpmsCap(
        connector,
        str(profile.get("chargingProfilePurpose")),
        stack if isinstance(stack, int) else 0,
        amps,
    )


def cpms_clear(payload: Any, is_16: bool) -> int | None:
    """The connector a CPMS ClearChargingProfile targets (0 or None: all)."""
    if not isinstance(payload, Mapping):
        return None
    if is_16:
        cid = payload.get("connectorId")
    else:
        criteria = payload.get("chargingProfileCriteria")
        cid = criteria.get("evseId") if isinstance(criteria, Mapping) else None
    return cid if isinstance(cid, int) else None
