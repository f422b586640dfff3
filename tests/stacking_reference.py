"""An independent reference of OCPP's charging-profile stacking rules, written from the
specification and not from `harmone.loadmgmt.stacking`: tests/loadmgmt/test_stacking.py checks
the resolver against it, and the model chargers of tests/loadsim.py apply profiles by it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from harmone.loadmgmt.stacking import Transaction
from harmone.ocpp.events import (
    ChargingProfile,
    ProfileKind,
    ProfilePurpose,
    SchedulePeriod,
)
from harmone.ocpp.versions import OcppVersion

V16 = OcppVersion.V16
TX, TX_DEFAULT, MAX = ProfilePurpose.TX, ProfilePurpose.TX_DEFAULT, ProfilePurpose.STATION_MAX
EXTERNAL = ProfilePurpose.EXTERNAL
RECURRING, RELATIVE = ProfileKind.RECURRING, ProfileKind.RELATIVE
#: A Monday, midnight UTC.
T0 = datetime(2026, 1, 5, tzinfo=UTC)


# --- an independent reference -----------------------------------------------------------------
#
# Written from the rules, not from the module. The charger's store is a list changed in place;
# every profile is unrolled into explicit [begin, end) intervals, each with its limit; the
# limit at an instant comes from sorting the intervals that contain it; the next change is
# found by stepping through time, one grid instant after the other. Every time in the
# generated scenarios is a multiple of Q seconds from T0, so answers change only on the grid.

Q = 60
#: How far ahead the reference looks for the next change.
HORIZON = 100 * Q
ABSENT = "absent"


@dataclass
class RefInstalled:
    connector: int
    profile: ChargingProfile
    installed: datetime
    by: str


class RefCharger:
    def __init__(self, version: OcppVersion) -> None:
        self.version = version
        self.store: list[RefInstalled] = []

    def set(self, connector: int, profile: ChargingProfile, at: datetime, by: str) -> None:
        for old in list(self.store):
            same_slot = (old.connector, old.profile.stack_level, old.profile.purpose) == (
                connector,
                profile.stack_level,
                profile.purpose,
            )
            if old.profile.id == profile.id or (self.version == V16 and same_slot):
                self.store.remove(old)
        self.store.append(RefInstalled(connector, profile, at, by))

    def clear(
        self,
        profile_id: int | None,
        connector_id: int | None,
        purpose: ProfilePurpose | None,
        stack_level: int | None,
    ) -> None:
        wanted = [(connector_id, "connector"), (purpose, "purpose"), (stack_level, "stack")]
        has_criteria = any(value is not None for value, _ in wanted)
        keep = []
        for p in self.store:
            got = {
                "connector": p.connector,
                "purpose": p.profile.purpose,
                "stack": p.profile.stack_level,
            }
            protected = self.version != V16 and p.profile.purpose in (
                EXTERNAL,
                ProfilePurpose.LOCAL_GENERATION,
            )
            everything = profile_id is None and not has_criteria
            by_id = profile_id is not None and p.profile.id == profile_id
            by_criteria = has_criteria and all(v is None or v == got[k] for v, k in wanted)
            if protected or not (everything or by_id or by_criteria):
                keep.append(p)
        self.store = keep

    def end(self, connector: int, tx_id: str) -> None:
        def goes(p: RefInstalled) -> bool:
            if p.profile.purpose != TX:
                return False
            if p.profile.transaction_id is None:
                return p.connector == connector
            return p.profile.transaction_id == tx_id

        self.store = [p for p in self.store if not goes(p)]


def ref_amps(
    period: SchedulePeriod, unit: str, kind: ProfileKind, phases: int, voltage: float
) -> float | None:
    if kind == ProfileKind.DYNAMIC or period.limit is None or period.limit == math.inf:
        return None
    value = float(period.limit)
    if unit == "W":
        n = phases
        if period.number_phases is not None and period.number_phases > 0:
            n = min(phases, period.number_phases)
        value = value / (voltage * n)
    return max(value, 0.0)


Interval = tuple[datetime, datetime | None, float | None]


def ref_intervals(
    p: RefInstalled, tx_start: datetime | None, at: datetime, phases: int, voltage: float
) -> list[Interval]:
    """The profile unrolled around `at`: every period as an explicit interval, cut to the
    schedule's duration, its recurrence and the profile's validity."""
    profile = p.profile
    valid_begin = (
        p.installed if profile.valid_from is None else max(p.installed, profile.valid_from)
    )
    valid_end = profile.valid_to
    out: list[Interval] = []
    for s in profile.schedules:
        if profile.kind == RELATIVE or s.start is None:
            origin = tx_start if tx_start is not None else at
        else:
            origin = s.start
        cycle = None
        if profile.kind == RECURRING and profile.recurrency is not None:
            cycle = timedelta(days=1 if profile.recurrency == "Daily" else 7)
        if cycle is None:
            origins = [origin]
        else:
            n = math.floor((at - origin).total_seconds() / cycle.total_seconds())
            origins = [origin + k * cycle for k in (n - 1, n, n + 1)]
        ordered = sorted(s.periods, key=lambda period: period.start)
        for o in origins:
            stop = None if s.duration is None else o + timedelta(seconds=s.duration)
            if cycle is not None and (stop is None or stop > o + cycle):
                stop = o + cycle
            for i, period in enumerate(ordered):
                begin = o + timedelta(seconds=period.start)
                end = None if i + 1 == len(ordered) else o + timedelta(seconds=ordered[i + 1].start)
                for bound in (stop, valid_end):
                    if bound is not None and (end is None or bound < end):
                        end = bound
                begin = max(begin, valid_begin)
                if end is None or begin < end:
                    out.append(
                        (begin, end, ref_amps(period, s.unit, profile.kind, phases, voltage))
                    )
    return out


def ref_limit(
    charger: RefCharger,
    connector: int,
    at: datetime,
    tx: Transaction | None,
    phases: int,
    voltage: float,
    by: set[str] | None,
) -> tuple[float | None, float | None]:
    pool = [p for p in charger.store if by is None or p.by in by]
    tx_start = None if tx is None else tx.started_at

    def lead(entries: list[tuple[RefInstalled, bool, datetime | None]]) -> Any:
        covering = []
        for p, own, start in entries:
            limits = [
                amps
                for begin, end, amps in ref_intervals(p, start, at, phases, voltage)
                if begin <= at and (end is None or at < end)
            ]
            if limits:
                best = None if None in limits else max(x for x in limits if x is not None)
                covering.append(((p.profile.stack_level, own), best))
        if not covering:
            return ABSENT
        top = max(key for key, _ in covering)
        winners = [amps for key, amps in covering if key == top]
        return None if None in winners else max(x for x in winners if x is not None)

    def belongs(p: RefInstalled) -> bool:
        if tx is None:
            return False
        if p.profile.transaction_id is None:
            return p.installed >= tx.started_at
        return p.profile.transaction_id == tx.id

    def of(purpose: ProfilePurpose, on: int) -> list[RefInstalled]:
        return [p for p in pool if p.profile.purpose == purpose and p.connector == on]

    txs = [(p, True, tx_start) for p in of(TX, connector) if belongs(p)]
    defaults = [(p, True, tx_start) for p in of(TX_DEFAULT, connector)]
    defaults += [(p, False, tx_start) for p in of(TX_DEFAULT, 0)]
    own = lead(txs)
    if own == ABSENT:
        own = lead(defaults)
    per_connector = [own, lead([(p, True, tx_start) for p in of(EXTERNAL, connector)])]
    station = [lead([(p, False, None) for p in of(purpose, 0)]) for purpose in (MAX, EXTERNAL)]

    def least(values: list[Any]) -> float | None:
        limits = [v for v in values if v is not None and v != ABSENT]
        return min(limits) if limits else None

    return least(per_connector), least(station)


def ref_next_change(
    charger: RefCharger,
    connector: int,
    at: datetime,
    tx: Transaction | None,
    phases: int,
    voltage: float,
    by: set[str] | None,
) -> datetime | None:
    """The first grid instant within HORIZON after `at` where the answer differs."""
    now = ref_limit(charger, connector, at, tx, phases, voltage, by)
    step = math.floor((at - T0).total_seconds() / Q) + 1
    instant = T0 + timedelta(seconds=step * Q)
    while instant <= at + timedelta(seconds=HORIZON):
        if ref_limit(charger, connector, instant, tx, phases, voltage, by) != now:
            return instant
        instant += timedelta(seconds=Q)
    return None
