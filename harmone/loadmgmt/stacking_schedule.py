"""When one charging profile's schedule speaks, and what it allows: OCPP's timing rules, pure.

`stacking.py` decides which profile a charger follows; this module answers, for one installed
profile at one instant, whether it is in force and has a schedule period there (it *covers*
the instant) and with what limit, and when that answer may next change. Times are aware
datetimes; all arithmetic is on `timedelta`, so it is exact to the microsecond.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from harmone.ocpp.events import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    SchedulePeriod,
)

__all__ = [
    "Cover",
    "Timing",
    "cover_at",
    "fixed_edges",
    "higher",
    "in_force",
    "lowest",
    "next_edge",
    "schedule_timing",
]

_CYCLES = {"Daily": timedelta(days=1), "Weekly": timedelta(weeks=1)}
#: Schedule offsets are clamped to this: a period that starts later never starts in practice,
#: and timedelta / datetime arithmetic would overflow on the 32-bit values the schemas allow.
_FAR_SECONDS = 100 * 365 * 86400


def _seconds(value: int) -> timedelta:
    return timedelta(seconds=max(-_FAR_SECONDS, min(_FAR_SECONDS, value)))


def _shift(instant: datetime, delta: timedelta) -> datetime | None:
    try:
        return instant + delta
    except OverflowError:
        return None


@dataclass(frozen=True, slots=True)
class Cover:
    """A profile (or a purpose) has a period at the instant asked about.

    `amps` is the limit per phase; None: the period limits nothing (a 2.1 period without a
    limit, a Dynamic profile whose limit HARMON-E cannot see, a limit too large for a float).
    """

    amps: float | None


@dataclass(frozen=True, slots=True)
class Timing:
    """Where a schedule's clock starts and how often it restarts.

    `anchor` None: the schedule is read as starting at the very instant asked about (a Relative
    schedule with no transaction to be relative to), so it is always at its first period.
    """

    anchor: datetime | None
    cycle: timedelta | None = None


def schedule_timing(
    profile: ChargingProfile, schedule: ChargingSchedule, tx_start: datetime | None
) -> Timing:
    """The clock of `schedule`; `tx_start` is the start of the transaction it is relative to.

    Relative schedules start with the transaction; without one they are read as if a transaction
    started at the instant asked about: that is the limit a car plugging in now would get, the
    question load management asks about an idle connector (EVerest's libocpp reads them the
    same way). A schedule without startSchedule is "relative to start of charging" (1.6
    ChargingSchedule), whatever its kind. Recurring schedules restart every day or week from
    startSchedule, before it as well as after: startSchedule fixes the time of day (or week).
    """
    if profile.kind is ProfileKind.RELATIVE or schedule.start is None:
        anchor = tx_start
    else:
        anchor = schedule.start
    if profile.kind is ProfileKind.RECURRING and profile.recurrency is not None:
        return Timing(anchor, _CYCLES[profile.recurrency])
    return Timing(anchor)


def _offset(timing: Timing, at: datetime) -> timedelta:
    if timing.anchor is None:
        return timedelta(0)
    offset = at - timing.anchor
    # Python's % on timedelta floors, so instants before the anchor land in the previous cycle.
    return offset % timing.cycle if timing.cycle is not None else offset


def _period(schedule: ChargingSchedule, offset: timedelta) -> SchedulePeriod | None:
    """The period in force `offset` into the schedule, or None before its first period and
    from its duration on (1.6 §5.16.4: periods past the duration are not executed)."""
    if offset < timedelta(0):
        return None
    if schedule.duration is not None and offset >= _seconds(schedule.duration):
        return None
    current: SchedulePeriod | None = None
    for period in sorted(schedule.periods, key=lambda p: p.start):
        if _seconds(period.start) <= offset:
            current = period
    return current


def _amps(
    period: SchedulePeriod, unit: str, kind: ProfileKind, phases: int, voltage: float
) -> float | None:
    if kind is ProfileKind.DYNAMIC or period.limit is None or math.isinf(period.limit):
        return None
    limit = float(period.limit)
    if unit == "W":
        # A power limit is the total over the phases the car uses: numberPhases (3 when absent,
        # K01.FR.49), but never more phases than the charger has. Fewer phases means more
        # current per phase, so this is the reading that never understates a phase's current.
        in_use = phases
        if period.number_phases is not None and period.number_phases >= 1:
            in_use = min(phases, period.number_phases)
        limit = limit / (voltage * in_use)
    # A negative limit (2.1 discharging) lets nothing flow towards the car.
    return max(0.0, limit)


def in_force(installed_at: datetime, profile: ChargingProfile, at: datetime) -> bool:
    """Accepted by then, and valid (validFrom inclusive, validTo exclusive)."""
    if at < installed_at:
        return False
    if profile.valid_from is not None and at < profile.valid_from:
        return False
    return profile.valid_to is None or at < profile.valid_to


def cover_at(
    installed_at: datetime,
    profile: ChargingProfile,
    tx_start: datetime | None,
    at: datetime,
    *,
    phases: int,
    voltage: float,
) -> Cover | None:
    """What `profile` allows at `at`, or None if it is not in force or has no period then.

    A 2.x profile may carry several schedules (ISO 15118: the car picks one); the highest of
    those covering the instant is taken, as the car may pick it.
    """
    if not in_force(installed_at, profile, at):
        return None
    best: Cover | None = None
    for schedule in profile.schedules:
        period = _period(schedule, _offset(schedule_timing(profile, schedule, tx_start), at))
        if period is not None:
            cover = Cover(_amps(period, schedule.unit, profile.kind, phases, voltage))
            best = cover if best is None else higher(best, cover)
    return best


def higher(a: Cover, b: Cover) -> Cover:
    """The more permissive of two covers (no limit beats any limit)."""
    if a.amps is None or b.amps is None:
        return Cover(None)
    return a if a.amps >= b.amps else b


def lowest(covers: Iterable[Cover | None]) -> float | None:
    """The lowest limit among the covers that limit something; None if none does."""
    limits = [c.amps for c in covers if c is not None and c.amps is not None]
    return min(limits) if limits else None


def _schedule_edges(timing: Timing, schedule: ChargingSchedule, after: datetime) -> list[datetime]:
    if timing.anchor is None:
        return []
    marks = [_seconds(p.start) for p in schedule.periods]
    if schedule.duration is not None:
        marks.append(_seconds(schedule.duration))
    if timing.cycle is None:
        shifted = (_shift(timing.anchor, m) for m in (timedelta(0), *marks))
    else:
        cycle = timing.cycle
        current = timing.anchor + ((after - timing.anchor) // cycle) * cycle
        in_cycle = [timedelta(0), *(m for m in marks if timedelta(0) <= m < cycle)]
        starts = [s for s in (current, _shift(current, cycle)) if s is not None]
        shifted = (_shift(start, m) for start in starts for m in in_cycle)
    return [e for e in shifted if e is not None]


def next_edge(
    installed_at: datetime, profile: ChargingProfile, tx_start: datetime | None, after: datetime
) -> datetime | None:
    """The first instant after `after` at which `cover_at` for this profile may change."""
    edges = [installed_at, profile.valid_from, profile.valid_to]
    for schedule in profile.schedules:
        edges.extend(_schedule_edges(schedule_timing(profile, schedule, tx_start), schedule, after))
    return min((e for e in edges if e is not None and e > after), default=None)


def fixed_edges(
    installed_at: datetime, profile: ChargingProfile, tx_start: datetime | None
) -> list[datetime]:
    """The instants at which this profile changes other than by recurring. Between two of
    them its answer repeats with a period of at most a week."""
    edges = [installed_at, profile.valid_from, profile.valid_to]
    for schedule in profile.schedules:
        timing = schedule_timing(profile, schedule, tx_start)
        if timing.cycle is None:
            edges.extend(_schedule_edges(timing, schedule, installed_at))
    return [e for e in edges if e is not None]
