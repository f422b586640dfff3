"""What load management makes of typed OCPP events (`harmone.ocpp.events`).

Pure functions from an event to the numbers the controller uses: a current per charger phase
from a meter reading, and a cap the CPMS's own charging profile puts on a connector.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from harmone.ocpp.events import ChargingProfile, Sample

__all__ = ["CpmsCap", "cpms_cap", "current_per_phase", "energy_register"]

_PHASE_INDEX = {"L1": 0, "L2": 1, "L3": 2, "L1-N": 0, "L2-N": 1, "L3-N": 2}


@dataclass(frozen=True, slots=True)
class CpmsCap:
    """A limit the CPMS's own SetChargingProfile puts on a connector (0: the whole charger)."""

    connector_id: int
    purpose: str
    stack_level: int
    amps: float | None  # None: a profile HARMON-E could not read as a limit


def current_per_phase(
    samples: Iterable[Sample], phases: int, voltage: float
) -> tuple[float, ...] | None:
    """Per-phase current (A) of one meter reading, for a charger with `phases` phases.

    Current.Import per phase wins; a phase-less Current.Import is taken as each phase's current;
    Power.Active.Import (W) is converted with the configured voltage when no current is reported.
    Returns None when the reading holds neither. Only what flows to the car counts (location
    Outlet, the default).
    """
    per_phase: dict[int, float] = {}
    total_current: float | None = None
    power: dict[int, float] = {}
    total_power: float | None = None
    for sample in samples:
        if sample.location != "Outlet":
            continue
        phase = sample.phase
        if sample.measurand == "Current.Import":
            if phase in _PHASE_INDEX:
                per_phase[_PHASE_INDEX[phase]] = sample.value
            elif phase is None:
                total_current = sample.value
        elif sample.measurand == "Power.Active.Import":
            if phase in _PHASE_INDEX:
                power[_PHASE_INDEX[phase]] = sample.value
            elif phase is None:
                total_power = sample.value
    if per_phase:
        return tuple(max(0.0, per_phase.get(i, 0.0)) for i in range(phases))
    if total_current is not None:
        return (max(0.0, total_current),) * phases
    if power:
        return tuple(max(0.0, power.get(i, 0.0) / voltage) for i in range(phases))
    if total_power is not None:
        return (max(0.0, total_power / voltage / phases),) * phases
    return None


def cpms_cap(connector_id: int, profile: ChargingProfile, phases: int, voltage: float) -> CpmsCap:
    """The CPMS's charging profile as a cap on a connector.

    HARMON-E does not follow the CPMS's schedule over time: it honours the strictest moment of
    the profile's first schedule (a 2.x profile may carry up to three, for different times).
    """
    amps: float | None = None
    if profile.schedules:
        schedule = profile.schedules[0]
        limits = [p.limit for p in schedule.periods if p.limit is not None and p.limit >= 0]
        if limits and math.isfinite(min(limits)):
            low = min(limits)
            amps = low / voltage / phases if schedule.unit == "W" else low
    return CpmsCap(connector_id, profile.purpose.value, profile.stack_level, amps)


def energy_register(samples: Iterable[Sample]) -> float | None:
    """The connector's energy register (Wh) in a meter reading, if it holds one."""
    for sample in samples:
        if sample.measurand == "Energy.Active.Import.Register" and sample.phase is None:
            return sample.value
    return None
