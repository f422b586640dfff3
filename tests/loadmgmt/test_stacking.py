"""What a charger applies from its charging profiles (OCPP 1.6 §3.13/§5.16, 2.0.1 K01/K02/K10).

First worked cases, one table per rule, for 1.6 and 2.0.1 (the two field cases of issue 9 among
them, and the specifications' own examples where they give one). Then a property: the module
agrees exactly with a reference written independently below — profiles unrolled into explicit
time intervals, the next change found by scanning instant by instant — over random sequences
of set / clear / transaction start and end, for 1.6, 2.0.1 and 2.1.
Run deeper with HYPOTHESIS_PROFILE=long.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stacking_reference import (
    HORIZON,
    Q,
    RefCharger,
    ref_limit,
    ref_next_change,
)

from harmone.loadmgmt.stacking import (
    ChargerProfiles,
    ConnectorLimit,
    Transaction,
    connector_limit,
)
from harmone.ocpp.events import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    ProfilesCleared,
    ProfileSet,
    SchedulePeriod,
    interpret,
)
from harmone.ocpp.framing import MessageType
from harmone.ocpp.versions import OcppVersion

V16, V201, V21 = OcppVersion.V16, OcppVersion.V201, OcppVersion.V21
BOTH = (V16, V201)
TX, TX_DEFAULT, MAX = ProfilePurpose.TX, ProfilePurpose.TX_DEFAULT, ProfilePurpose.STATION_MAX
EXTERNAL = ProfilePurpose.EXTERNAL
ABSOLUTE, RECURRING, RELATIVE = ProfileKind.ABSOLUTE, ProfileKind.RECURRING, ProfileKind.RELATIVE
#: A Monday, midnight UTC.
T0 = datetime(2026, 1, 5, tzinfo=UTC)
DAY = 86_400
WEEK = 7 * DAY


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sched(
    *periods: tuple[int, float | None] | tuple[int, float | None, int],
    unit: Literal["A", "W"] = "A",
    start: float | None = None,
    duration: int | None = None,
) -> ChargingSchedule:
    """A schedule from (startPeriod, limit[, numberPhases]) tuples; `start` in seconds from T0."""
    return ChargingSchedule(
        unit=unit,
        periods=tuple(SchedulePeriod(p[0], p[1], p[2] if len(p) > 2 else None) for p in periods),
        duration=duration,
        start=None if start is None else t(start),
    )


def prof(
    pid: int,
    purpose: ProfilePurpose,
    schedule: float | ChargingSchedule | tuple[ChargingSchedule, ...] | None,
    *,
    stack: int = 0,
    kind: ProfileKind = RELATIVE,
    tx: str | None = None,
    recurrency: Literal["Daily", "Weekly"] | None = None,
    valid_from: float | None = None,
    valid_to: float | None = None,
) -> ChargingProfile:
    """A profile; a bare number is one period at 0 with that limit in A (HARMON-E's shape)."""
    if isinstance(schedule, ChargingSchedule):
        schedules: tuple[ChargingSchedule, ...] = (schedule,)
    elif isinstance(schedule, tuple):
        schedules = schedule
    else:
        schedules = (sched((0, schedule)),)
    return ChargingProfile(
        id=pid,
        stack_level=stack,
        purpose=purpose,
        kind=kind,
        schedules=schedules,
        recurrency=recurrency,
        valid_from=None if valid_from is None else t(valid_from),
        valid_to=None if valid_to is None else t(valid_to),
        transaction_id=tx,
    )


# A step: ("set", connector, profile[, at=0[, set_by="cpms"]]) | ("clear", criteria)
# | ("end", connector, transaction id)
Step = tuple[Any, ...]


def build(version: OcppVersion, steps: Sequence[Step]) -> ChargerProfiles:
    cp = ChargerProfiles(version)
    for step in steps:
        if step[0] == "set":
            _, connector, profile, *rest = step
            at = rest[0] if rest else 0
            by = rest[1] if len(rest) > 1 else "cpms"
            cp = cp.set(connector, profile, t(at), by)
        elif step[0] == "clear":
            cp = cp.clear(**step[1])
        else:
            cp = cp.transaction_ended(step[1], step[2])
    return cp


def query(
    cp: ChargerProfiles,
    connector: int,
    at: float,
    tx: tuple[str, float] | None = None,
    *,
    phases: int = 3,
    voltage: float = 230.0,
    set_by: set[str] | None = None,
) -> ConnectorLimit:
    transaction = None if tx is None else Transaction(tx[0], t(tx[1]))
    return connector_limit(
        cp, connector, t(at), transaction, phases=phases, voltage=voltage, set_by=set_by
    )


@dataclass(frozen=True)
class Case:
    """Profiles installed by `steps`, then the limit on `connector` at `at` (seconds from T0)."""

    name: str
    steps: tuple[Step, ...]
    at: float
    amps: float | None
    station: float | None = None
    until: float | None = None
    connector: int = 1
    tx: tuple[str, float] | None = None
    versions: tuple[OcppVersion, ...] = BOTH
    phases: int = 3
    set_by: set[str] | None = None


def _params(cases: Sequence[Case]) -> list[Any]:
    return [pytest.param(c, v, id=f"{c.name}-{v}") for c in cases for v in c.versions]


def _check(case: Case, version: OcppVersion) -> None:
    cp = build(version, case.steps)
    got = query(cp, case.connector, case.at, case.tx, phases=case.phases, set_by=case.set_by)
    until = None if case.until is None else t(case.until)
    assert got == ConnectorLimit(case.amps, case.station, until)


# --- purposes and their precedence ------------------------------------------------------------

PURPOSES = [
    # Issue 9, field case 1: a CPMS pins every connector at 0 A by default and grants the
    # transaction 16 A. The TxProfile overrides the TxDefaultProfile: 16 A, not 0 A.
    Case(
        "txdefault-0A-on-station-then-16A-txprofile",
        (("set", 0, prof(1, TX_DEFAULT, 0)), ("set", 1, prof(2, TX, 16, tx="T1"), 5)),
        at=10,
        amps=16.0,
        tx=("T1", 0),
    ),
    Case(
        "idle-connector-gets-the-default",
        (("set", 0, prof(1, TX_DEFAULT, 0)), ("set", 1, prof(2, TX, 16, tx="T1"), 5)),
        at=10,
        amps=0.0,
    ),
    Case(
        "txprofile-of-another-connector-does-not-apply",
        (("set", 0, prof(1, TX_DEFAULT, 0)), ("set", 2, prof(2, TX, 16, tx="T1"), 5)),
        at=10,
        amps=0.0,
        tx=("T1", 0),
    ),
    # Issue 9, field case 2: an 8 A TxProfile for T1 ends with T1; T2 is not held at 8 A.
    Case(
        "txprofile-ends-with-its-transaction",
        (("set", 1, prof(1, TX, 8, tx="T1"), 0), ("end", 1, "T1")),
        at=100,
        amps=None,
        tx=("T2", 90),
    ),
    Case(
        "txprofile-of-another-transaction-does-not-apply",
        (("set", 1, prof(1, TX, 8, tx="T1"), 0),),
        at=100,
        amps=None,
        tx=("T2", 90),
    ),
    Case(
        "txprofile-applies-to-its-transaction",
        (("set", 1, prof(1, TX, 8, tx="T1"), 0),),
        at=100,
        amps=8.0,
        tx=("T1", 0),
    ),
    Case(
        "txprofile-needs-a-transaction",
        (("set", 1, prof(1, TX, 8, tx="T1"), 0),),
        at=100,
        amps=None,
    ),
    Case(
        "station-max-caps-the-station-not-the-connector",
        (("set", 0, prof(1, MAX, 20)), ("set", 1, prof(2, TX_DEFAULT, 32))),
        at=10,
        amps=32.0,
        station=20.0,
    ),
    Case(
        "own-txdefault-wins-over-station-wide-at-the-same-stack-level",
        (("set", 0, prof(1, TX_DEFAULT, 10)), ("set", 1, prof(2, TX_DEFAULT, 16))),
        at=10,
        amps=16.0,
        versions=(V16,),
    ),
    Case(
        "station-wide-txdefault-applies-to-the-other-connectors",
        (("set", 0, prof(1, TX_DEFAULT, 10)), ("set", 1, prof(2, TX_DEFAULT, 16))),
        at=10,
        amps=10.0,
        connector=2,
    ),
    # HARMON-E's 0 A default (stack 0 on the connector) under a CPMS default on the station one
    # stack level higher: the higher stack level leads, whichever connector it is on.
    Case(
        "higher-station-wide-txdefault-beats-a-lower-own-one",
        (
            ("set", 1, prof(1, TX_DEFAULT, 0), 0, "harmone"),
            ("set", 0, prof(2, TX_DEFAULT, 16, stack=1)),
        ),
        at=10,
        amps=16.0,
    ),
    Case(
        "txprofile-without-period-falls-back-to-txdefault",
        (
            ("set", 1, prof(1, TX_DEFAULT, 6)),
            ("set", 1, prof(2, TX, sched((0, 16), duration=60), tx="T1"), 1),
        ),
        at=30,
        amps=16.0,
        until=60,
        tx=("T1", 0),
    ),
    Case(
        "after-the-txprofile-duration-the-default-again",
        (
            ("set", 1, prof(1, TX_DEFAULT, 6)),
            ("set", 1, prof(2, TX, sched((0, 16), duration=60), tx="T1"), 1),
        ),
        at=90,
        amps=6.0,
        tx=("T1", 0),
    ),
    Case(
        "a-txprofile-may-allow-more-than-the-default",
        (("set", 1, prof(1, TX_DEFAULT, 6, stack=5)), ("set", 1, prof(2, TX, 32, tx="T1"), 1)),
        at=10,
        amps=32.0,
        tx=("T1", 0),
    ),
    Case(
        "txprofile-on-the-station-is-not-counted",
        (("set", 0, prof(1, TX, 8, tx="T1")),),
        at=10,
        amps=None,
        tx=("T1", 0),
    ),
    Case(
        "station-max-on-a-connector-is-not-counted",
        (("set", 1, prof(1, MAX, 8)),),
        at=10,
        amps=None,
    ),
    # 1.6: a TxProfile without transactionId is the running transaction's.
    Case(
        "txprofile-without-id-belongs-to-the-running-transaction",
        (("set", 1, prof(1, TX, 8), 50),),
        at=60,
        amps=8.0,
        tx=("T1", 40),
        versions=(V16,),
    ),
    Case(
        "txprofile-without-id-from-before-this-transaction-is-stale",
        (("set", 1, prof(1, TX, 8), 30),),
        at=60,
        amps=None,
        tx=("T2", 40),
        versions=(V16,),
    ),
    Case(
        "txprofile-without-id-accepted-as-the-transaction-starts",
        (("set", 1, prof(1, TX, 8), 40),),
        at=60,
        amps=8.0,
        tx=("T1", 40),
        versions=(V16,),
    ),
    Case(
        "txprofile-without-id-ends-with-the-connectors-transaction",
        (("set", 1, prof(1, TX, 8), 50), ("end", 1, "T1")),
        at=60,
        amps=None,
        tx=("T1", 40),
        versions=(V16,),
    ),
    Case(
        "external-constraints-on-the-evse-cap-it",
        (("set", 1, prof(1, TX, 16, tx="T1")), ("set", 1, prof(2, EXTERNAL, 10))),
        at=10,
        amps=10.0,
        tx=("T1", 0),
        versions=(V201, V21),
    ),
    Case(
        "external-constraints-on-the-station-cap-the-station",
        (("set", 0, prof(1, MAX, 20, kind=ABSOLUTE)), ("set", 0, prof(2, EXTERNAL, 12))),
        at=10,
        amps=None,
        station=12.0,
        versions=(V201, V21),
    ),
    Case(
        "lowest-of-the-purposes",
        (
            ("set", 1, prof(1, TX, 16, tx="T1")),
            ("set", 1, prof(2, EXTERNAL, 20)),
            ("set", 0, prof(3, MAX, 13, kind=ABSOLUTE)),
        ),
        at=10,
        amps=16.0,
        station=13.0,
        tx=("T1", 0),
        versions=(V201,),
    ),
]


@pytest.mark.parametrize(("case", "version"), _params(PURPOSES))
def test_purposes_and_precedence(case: Case, version: OcppVersion) -> None:
    _check(case, version)


# --- stack levels, validity and time --------------------------------------------------------

#: Shaped like the conformance test of stacking (OCTT TC_072_CS): TxDefault stack 0 for 400 s
#: (6, 8, 10 A at 0, 100, 200 s), stack 1 on top for 150 s. Limits of stack 1 are ours.
TC072 = (
    (
        "set",
        1,
        prof(
            1, TX_DEFAULT, sched((0, 6), (100, 8), (200, 10), start=0, duration=400), kind=ABSOLUTE
        ),
    ),
    (
        "set",
        1,
        prof(2, TX_DEFAULT, sched((0, 12), (50, 7), start=0, duration=150), kind=ABSOLUTE, stack=1),
    ),
)


def _weekly_policy() -> tuple[tuple[int, float], ...]:
    """1.6 §3.13.2's example: full current (32 A) on weekdays 23:00–06:00 and all weekend,
    reduced (10 A) at other times; one week from Monday 00:00."""
    periods: list[tuple[int, float]] = [(0, 32)]
    for day in range(5):
        periods += [(day * DAY + 6 * 3600, 10), (day * DAY + 23 * 3600, 32)]
    return tuple(periods)


WEEKLY = prof(1, TX_DEFAULT, sched(*_weekly_policy(), start=0), kind=RECURRING, recurrency="Weekly")
#: "On top of that, one can define other TxDefaultProfiles that define exceptions to this rule,
#: for example for holidays": Wednesday of the second week, full current all day.
HOLIDAY = prof(
    2, TX_DEFAULT, sched((0, 32), start=WEEK + 2 * DAY, duration=DAY), kind=ABSOLUTE, stack=1
)

TIME = [
    Case("tc072-stack-1-leads", TC072, at=20, amps=12.0, until=50),
    Case("tc072-stack-1-second-period", TC072, at=60, amps=7.0, until=150),
    Case("tc072-stack-1-ended-stack-0-again", TC072, at=150, amps=8.0, until=200),
    Case("tc072-stack-0-last-period", TC072, at=250, amps=10.0, until=400),
    Case("tc072-both-ended", TC072, at=400, amps=None),
    Case("weekly-monday-night", (("set", 1, WEEKLY),), at=3 * 3600, amps=32.0, until=6 * 3600),
    Case("weekly-monday-day", (("set", 1, WEEKLY),), at=12 * 3600, amps=10.0, until=23 * 3600),
    Case(
        "weekly-saturday",
        (("set", 1, WEEKLY),),
        at=5 * DAY + 12 * 3600,
        amps=32.0,
        until=WEEK + 6 * 3600,
    ),
    Case(
        "weekly-next-thursday",
        (("set", 1, WEEKLY),),
        at=WEEK + 3 * DAY + 12 * 3600,
        amps=10.0,
        until=WEEK + 3 * DAY + 23 * 3600,
    ),
    Case(
        "holiday-on-top",
        (("set", 1, WEEKLY), ("set", 1, HOLIDAY)),
        at=WEEK + 2 * DAY + 12 * 3600,
        amps=32.0,
        until=WEEK + 3 * DAY + 6 * 3600,
    ),
    Case(
        "after-the-holiday",
        (("set", 1, WEEKLY), ("set", 1, HOLIDAY)),
        at=WEEK + 3 * DAY + 12 * 3600,
        amps=10.0,
        until=WEEK + 3 * DAY + 23 * 3600,
    ),
    # §5.16.4: a recurring schedule shorter than its recurrence falls back to a lower stack
    # level, then to no limit at all.
    Case(
        "daily-with-duration-falls-back",
        (
            ("set", 1, prof(1, TX_DEFAULT, 6)),
            (
                "set",
                1,
                prof(
                    2,
                    TX_DEFAULT,
                    sched((0, 32), start=-3 * DAY + 22 * 3600, duration=8 * 3600),
                    kind=RECURRING,
                    recurrency="Daily",
                    stack=1,
                ),
            ),
        ),
        at=12 * 3600,
        amps=6.0,
        until=22 * 3600,
    ),
    Case(
        "daily-applies-before-its-start-date-too",
        (
            (
                "set",
                1,
                prof(
                    1,
                    TX_DEFAULT,
                    sched((0, 32), (3600, 6), start=10 * DAY),
                    kind=RECURRING,
                    recurrency="Daily",
                ),
            ),
        ),
        at=1800,
        amps=32.0,
        until=3600,
    ),
    Case(
        "recurring-restart-before-its-first-period-is-a-gap",
        (
            ("set", 1, prof(1, TX_DEFAULT, 6)),
            (
                "set",
                1,
                prof(
                    2,
                    TX_DEFAULT,
                    sched((3600, 10), start=0),
                    kind=RECURRING,
                    recurrency="Daily",
                    stack=1,
                ),
            ),
        ),
        at=2 * 3600,
        amps=10.0,
        until=DAY,
    ),
    Case(
        "recurring-gap-until-its-first-period",
        (
            ("set", 1, prof(1, TX_DEFAULT, 6)),
            (
                "set",
                1,
                prof(
                    2,
                    TX_DEFAULT,
                    sched((3600, 10), start=0),
                    kind=RECURRING,
                    recurrency="Daily",
                    stack=1,
                ),
            ),
        ),
        at=DAY + 60,
        amps=6.0,
        until=DAY + 3600,
    ),
    Case(
        "higher-stack-not-yet-valid",
        (
            ("set", 1, prof(1, TX_DEFAULT, 6)),
            ("set", 1, prof(2, TX_DEFAULT, 16, stack=1, valid_from=100)),
        ),
        at=50,
        amps=6.0,
        until=100,
    ),
    Case(
        "higher-stack-valid-from-inclusive",
        (
            ("set", 1, prof(1, TX_DEFAULT, 6)),
            ("set", 1, prof(2, TX_DEFAULT, 16, stack=1, valid_from=100)),
        ),
        at=100,
        amps=16.0,
    ),
    Case(
        "valid-to-exclusive",
        (
            ("set", 1, prof(1, TX_DEFAULT, 6)),
            ("set", 1, prof(2, TX_DEFAULT, 16, stack=1, valid_to=100)),
        ),
        at=100,
        amps=6.0,
    ),
    Case(
        "not-in-force-before-it-was-accepted",
        (("set", 1, prof(1, TX_DEFAULT, 6), 100),),
        at=50,
        amps=None,
        until=100,
    ),
    Case(
        "relative-counts-from-the-transaction-start",
        (("set", 1, prof(1, TX_DEFAULT, sched((0, 32), (3600, 16)))),),
        at=1000 + 1800,
        amps=32.0,
        until=1000 + 3600,
        tx=("T1", 1000),
    ),
    Case(
        "relative-later-period",
        (("set", 1, prof(1, TX_DEFAULT, sched((0, 32), (3600, 16)))),),
        at=1000 + 4000,
        amps=16.0,
        tx=("T1", 1000),
    ),
    # Without a transaction a Relative schedule is read as starting now: what a car that
    # plugs in now would get.
    Case(
        "relative-without-transaction-is-its-first-period",
        (("set", 1, prof(1, TX_DEFAULT, sched((0, 32), (3600, 16), duration=7200))),),
        at=50_000,
        amps=32.0,
    ),
    Case(
        "absolute-without-start-is-relative-to-charging",
        (("set", 1, prof(1, TX_DEFAULT, sched((0, 32), (60, 16)), kind=ABSOLUTE)),),
        at=530,
        amps=32.0,
        until=560,
        tx=("T1", 500),
        versions=(V16,),
    ),
    # §5.16.4: "If duration is longer than the chargingSchedulePeriod, the Charge Point SHALL
    # keep the value of the last chargingSchedulePeriod until duration has ended."
    Case(
        "last-period-lasts-until-the-duration",
        (
            (
                "set",
                1,
                prof(1, TX_DEFAULT, sched((0, 10), (60, 12), start=0, duration=600), kind=ABSOLUTE),
            ),
        ),
        at=300,
        amps=12.0,
        until=600,
    ),
    Case(
        "before-the-first-period-nothing",
        (("set", 1, prof(1, TX_DEFAULT, sched((0, 10), start=200), kind=ABSOLUTE)),),
        at=100,
        amps=None,
        until=200,
    ),
    # A lower stack level's edges do not change the answer while a higher one leads.
    Case(
        "shadowed-edges-are-not-changes",
        (
            ("set", 1, prof(1, TX_DEFAULT, sched((0, 6), (60, 7), (120, 8)))),
            (
                "set",
                1,
                prof(2, TX_DEFAULT, sched((0, 16), start=0, duration=300), kind=ABSOLUTE, stack=1),
            ),
        ),
        at=10,
        amps=16.0,
        until=300,
        tx=("T1", 0),
    ),
    Case(
        "a-change-to-the-same-limit-is-no-change",
        (
            ("set", 1, prof(1, TX_DEFAULT, 16)),
            (
                "set",
                1,
                prof(
                    2,
                    TX_DEFAULT,
                    sched((0, 16), start=0, duration=300),
                    kind=ABSOLUTE,
                    stack=1,
                    valid_to=100_000,
                ),
            ),
        ),
        at=10,
        amps=16.0,
    ),
    Case(
        "a-far-valid-to-behind-a-daily-recurrence-never-changes",
        (
            (
                "set",
                1,
                prof(
                    1,
                    TX_DEFAULT,
                    sched((0, 6), (3600, 8), start=0),
                    kind=RECURRING,
                    recurrency="Daily",
                    valid_to=3 * 365 * DAY,
                ),
            ),
            ("set", 1, prof(2, TX_DEFAULT, 16, stack=1)),
        ),
        at=10,
        amps=16.0,
    ),
]


@pytest.mark.parametrize(("case", "version"), _params(TIME))
def test_stack_levels_validity_and_time(case: Case, version: OcppVersion) -> None:
    _check(case, version)


# --- units, phases and what limits nothing ----------------------------------------------------

UNITS = [
    Case(
        "watts-over-three-phases",
        (("set", 1, prof(1, TX_DEFAULT, sched((0, 11040), unit="W"))),),
        at=0,
        amps=16.0,
    ),
    Case(
        "watts-on-a-one-phase-charger",
        (("set", 1, prof(1, TX_DEFAULT, sched((0, 7360), unit="W"))),),
        at=0,
        amps=32.0,
        phases=1,
    ),
    Case(
        "watts-with-numberphases-1",
        (("set", 1, prof(1, TX_DEFAULT, sched((0, 7360, 1), unit="W"))),),
        at=0,
        amps=32.0,
    ),
    Case(
        "numberphases-3-on-a-one-phase-charger",
        (("set", 1, prof(1, TX_DEFAULT, sched((0, 7360, 3), unit="W"))),),
        at=0,
        amps=32.0,
        phases=1,
    ),
    Case(
        "amps-ignore-numberphases",
        (("set", 1, prof(1, TX_DEFAULT, sched((0, 16, 1)))),),
        at=0,
        amps=16.0,
    ),
    Case(
        "station-max-in-watts",
        (("set", 0, prof(1, MAX, sched((0, 22080), unit="W"), kind=ABSOLUTE)),),
        at=0,
        amps=None,
        station=32.0,
    ),
    Case("negative-limit-is-zero", (("set", 1, prof(1, TX_DEFAULT, -5)),), at=0, amps=0.0),
    Case(
        "infinite-limit-is-no-limit", (("set", 1, prof(1, TX_DEFAULT, math.inf)),), at=0, amps=None
    ),
    # 2.x: up to three schedules for the car to choose from (ISO 15118); it may take any.
    Case(
        "several-schedules-the-highest",
        (("set", 1, prof(1, TX, (sched((0, 10)), sched((0, 20), (60, 5))), tx="T1")),),
        at=30,
        amps=20.0,
        until=60,
        tx=("T1", 0),
        versions=(V201, V21),
    ),
    Case(
        "several-schedules-one-without-period",
        (("set", 1, prof(1, TX, (sched((0, 10)), sched((0, 20), duration=60)), tx="T1")),),
        at=90,
        amps=10.0,
        tx=("T1", 0),
        versions=(V201, V21),
    ),
    # 2.1: a period without a limit covers the instant and limits nothing.
    Case(
        "period-without-limit",
        (("set", 1, prof(1, TX_DEFAULT, 6)), ("set", 1, prof(2, TX_DEFAULT, None, stack=1))),
        at=0,
        amps=None,
        versions=(V21,),
    ),
    Case(
        "several-schedules-one-without-limit",
        (("set", 1, prof(1, TX, (sched((0, 10)), sched((0, None))), tx="T1")),),
        at=30,
        amps=None,
        tx=("T1", 0),
        versions=(V21,),
    ),
    Case(
        "dynamic-profile-limit-unseen",
        (
            ("set", 1, prof(1, TX_DEFAULT, 6)),
            ("set", 1, prof(2, TX_DEFAULT, 6, stack=1, kind=ProfileKind.DYNAMIC)),
        ),
        at=0,
        amps=None,
        versions=(V21,),
    ),
    Case(
        "priority-and-local-generation-are-not-limits",
        (
            ("set", 1, prof(1, TX_DEFAULT, 6)),
            ("set", 1, prof(2, ProfilePurpose.PRIORITY, 2, stack=3)),
            ("set", 0, prof(3, ProfilePurpose.LOCAL_GENERATION, 1, kind=ABSOLUTE)),
        ),
        at=0,
        amps=6.0,
        versions=(V21,),
    ),
]


@pytest.mark.parametrize(("case", "version"), _params(UNITS))
def test_units_and_phases(case: Case, version: OcppVersion) -> None:
    _check(case, version)


# --- SetChargingProfile replaces, ClearChargingProfile removes ---------------------------------

REPLACE = [
    Case(
        "same-id-replaces-anywhere",
        (("set", 1, prof(1, TX_DEFAULT, 6)), ("set", 2, prof(1, TX_DEFAULT, 16, stack=4))),
        at=10,
        amps=None,
    ),
    Case(
        "same-id-replaces-with-the-new-limit",
        (("set", 1, prof(1, TX_DEFAULT, 6)), ("set", 1, prof(1, TX_DEFAULT, 16, stack=4))),
        at=10,
        amps=16.0,
    ),
    # 1.6 §3.13.2: one profile per stack level and purpose (on a connector).
    Case(
        "v16-same-stack-and-purpose-replaces",
        (
            ("set", 1, prof(1, TX_DEFAULT, 6, stack=2)),
            (
                "set",
                1,
                prof(2, TX_DEFAULT, sched((0, 16), start=0, duration=60), kind=ABSOLUTE, stack=2),
            ),
        ),
        at=100,
        amps=None,
        versions=(V16,),
    ),
    # 2.0.1 leaves such pairs to the CSMS to avoid (K01.FR.06); a charger that accepted both
    # has both: the second one's end uncovers the first.
    Case(
        "v201-same-stack-and-purpose-both-kept",
        (
            ("set", 1, prof(1, TX_DEFAULT, 6, stack=2)),
            (
                "set",
                1,
                prof(2, TX_DEFAULT, sched((0, 16), start=0, duration=60), kind=ABSOLUTE, stack=2),
            ),
        ),
        at=100,
        amps=6.0,
        versions=(V201, V21),
    ),
    Case(
        "v201-both-in-force-the-higher",
        (
            ("set", 1, prof(1, TX_DEFAULT, 6, stack=2)),
            (
                "set",
                1,
                prof(2, TX_DEFAULT, sched((0, 16), start=0, duration=60), kind=ABSOLUTE, stack=2),
            ),
        ),
        at=10,
        amps=16.0,
        until=60,
        versions=(V201, V21),
    ),
    Case(
        "v16-same-stack-on-another-connector-stays",
        (("set", 1, prof(1, TX_DEFAULT, 6, stack=2)), ("set", 2, prof(2, TX_DEFAULT, 16, stack=2))),
        at=10,
        amps=6.0,
        versions=(V16,),
    ),
    # §3.13.1: a TxDefaultProfile on a connector replaces the one on 0 "only for that specific
    # connector": connector 2 keeps the station-wide one.
    Case(
        "v16-connector-txdefault-leaves-station-one-for-others",
        (("set", 0, prof(1, TX_DEFAULT, 6)), ("set", 1, prof(2, TX_DEFAULT, 16))),
        at=10,
        amps=6.0,
        connector=2,
        versions=(V16,),
    ),
    # 5.16.2: a SetChargingProfile for the transaction at the stack level of the profile given
    # with RemoteStartTransaction replaces it.
    Case(
        "v16-txprofile-replaces-the-one-of-remote-start",
        (("set", 1, prof(1, TX, 16), 40), ("set", 1, prof(2, TX, 4, tx="T1"), 50)),
        at=60,
        amps=4.0,
        tx=("T1", 40),
        versions=(V16,),
    ),
    # The charger does not know who sent a profile: HARMON-E's replaces the CPMS's.
    Case(
        "replacement-ignores-who-set-it",
        (
            ("set", 1, prof(7, TX_DEFAULT, 6), 0, "cpms"),
            ("set", 1, prof(7, TX_DEFAULT, 16), 0, "harmone"),
        ),
        at=10,
        amps=None,
        set_by={"cpms"},
    ),
]


@pytest.mark.parametrize(("case", "version"), _params(REPLACE))
def test_set_replaces(case: Case, version: OcppVersion) -> None:
    _check(case, version)


#: Connector 1: TxDefault stack 0 (id 1, 6 A), stack 1 (id 2, 10 A); station: TxDefault stack 2
#: (id 3, 12 A); connector 1: TxProfile stack 0 (id 4, 16 A).
CLEARABLE = (
    ("set", 1, prof(1, TX_DEFAULT, 6)),
    ("set", 1, prof(2, TX_DEFAULT, 10, stack=1)),
    ("set", 0, prof(3, TX_DEFAULT, 12, stack=2)),
    ("set", 1, prof(4, TX, 16, tx="T1")),
)


def _cleared(**criteria: Any) -> tuple[Step, ...]:
    return (*CLEARABLE, ("clear", criteria))


CLEAR = [
    Case("nothing-cleared", CLEARABLE, at=10, amps=12.0),
    Case("by-id", _cleared(profile_id=3), at=10, amps=10.0),
    Case("by-connector", _cleared(connector_id=0), at=10, amps=10.0),
    Case("by-connector-keeps-the-others", _cleared(connector_id=1), at=10, amps=12.0),
    Case("by-purpose", _cleared(purpose=TX_DEFAULT), at=10, amps=16.0, tx=("T1", 0)),
    Case("by-stack-level", _cleared(stack_level=2), at=10, amps=10.0),
    Case(
        "by-connector-and-stack-level",
        (*_cleared(profile_id=3), ("clear", {"connector_id": 1, "stack_level": 1})),
        at=10,
        amps=6.0,
    ),
    Case("criteria-all-must-match", _cleared(connector_id=0, stack_level=1), at=10, amps=12.0),
    Case("no-criteria-clears-all", _cleared(), at=10, amps=None, tx=("T1", 0)),
    Case("id-and-criteria-clear-both", _cleared(profile_id=3, stack_level=1), at=10, amps=6.0),
    Case("unknown-id-clears-nothing", _cleared(profile_id=99), at=10, amps=12.0),
    Case(
        "external-constraints-are-not-the-csms-to-clear",
        (("set", 1, prof(1, EXTERNAL, 10)), ("set", 1, prof(2, TX_DEFAULT, 16)), ("clear", {})),
        at=10,
        amps=10.0,
        versions=(V201, V21),
    ),
]


@pytest.mark.parametrize(("case", "version"), _params(CLEAR))
def test_clear_removes(case: Case, version: OcppVersion) -> None:
    _check(case, version)


def test_set_by_restricts_whose_profiles_count() -> None:
    cp = build(
        V16,
        (
            ("set", 1, prof(1, TX_DEFAULT, 0), 0, "harmone"),
            ("set", 1, prof(2, TX, 10, tx="T1"), 0, "harmone"),
            ("set", 1, prof(3, TX, 16, tx="T1", stack=1), 0, "cpms"),
            ("set", 0, prof(4, MAX, 20, kind=ABSOLUTE), 0, "cpms"),
        ),
    )
    tx = ("T1", 0)
    assert query(cp, 1, 5, tx) == ConnectorLimit(16.0, 20.0, None)
    assert query(cp, 1, 5, tx, set_by={"cpms"}) == ConnectorLimit(16.0, 20.0, None)
    assert query(cp, 1, 5, tx, set_by={"harmone"}) == ConnectorLimit(10.0, None, None)
    assert query(cp, 1, 5, set_by={"harmone"}) == ConnectorLimit(0.0, None, None)
    assert query(cp, 1, 5, set_by=set()) == ConnectorLimit(None, None, None)


def test_bad_questions_are_refused() -> None:
    cp = ChargerProfiles(V16)
    with pytest.raises(ValueError, match="per connector"):
        query(cp, 0, 0)
    with pytest.raises(ValueError, match="positive"):
        query(cp, 1, 0, phases=0)
    with pytest.raises(ValueError, match="positive"):
        query(cp, 1, 0, voltage=0.0)
    with pytest.raises(ValueError, match="aware"):
        connector_limit(cp, 1, datetime(2026, 1, 1), None, phases=3, voltage=230.0)


def test_values_are_immutable() -> None:
    empty = ChargerProfiles(V16)
    one = empty.set(1, prof(1, TX_DEFAULT, 6), T0, "cpms")
    assert empty.profiles == ()
    assert len(one.profiles) == 1
    assert one.clear().profiles == ()
    assert len(one.profiles) == 1


# --- from the frames the relay sees -----------------------------------------------------------

SET16 = {
    "connectorId": 0,
    "csChargingProfiles": {
        "chargingProfileId": 100,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Relative",
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 0}],
        },
    },
}
TXSET16 = {
    "connectorId": 1,
    "csChargingProfiles": {
        "chargingProfileId": 101,
        "transactionId": 1234,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Relative",
        "chargingSchedule": {
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11040.0}],
        },
    },
}
SET201 = {
    "evseId": 0,
    "chargingProfile": {
        "id": 7,
        "stackLevel": 1,
        "chargingProfilePurpose": "ChargingStationMaxProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [
            {
                "id": 1,
                "startSchedule": "2026-01-05T00:00:00Z",
                "duration": 3600,
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 24.0}],
            }
        ],
    },
}


def _accepted(
    version: OcppVersion, action: str, request: dict[str, Any]
) -> ProfileSet | ProfilesCleared:
    events = interpret(
        version, "charger", MessageType.CALLRESULT, action, {"status": "Accepted"}, request
    )
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, ProfileSet | ProfilesCleared)
    return event


def test_events_from_accepted_frames_v16() -> None:
    cp = ChargerProfiles(V16)
    cp = cp.apply(_accepted(V16, "SetChargingProfile", SET16), t(0))
    cp = cp.apply(_accepted(V16, "SetChargingProfile", TXSET16), t(10))
    assert query(cp, 1, 20, ("1234", 5)) == ConnectorLimit(16.0, None, None)
    assert query(cp, 2, 20, ("77", 5)) == ConnectorLimit(0.0, None, None)
    cleared = _accepted(V16, "ClearChargingProfile", {"connectorId": 0})
    cp = cp.apply(cleared, t(30))
    assert query(cp, 2, 40, ("77", 5)) == ConnectorLimit(None, None, None)
    assert query(cp, 1, 40, ("1234", 5)).amps == 16.0


def test_events_from_accepted_frames_v201() -> None:
    cp = ChargerProfiles(V201).apply(_accepted(V201, "SetChargingProfile", SET201), t(0))
    assert query(cp, 1, 60) == ConnectorLimit(None, 24.0, t(3600))
    cleared = _accepted(V201, "ClearChargingProfile", {"chargingProfileId": 7})
    assert query(cp.apply(cleared, t(70)), 1, 80) == ConnectorLimit(None, None, None)


def test_a_dynamic_profile_is_an_event_not_a_crash() -> None:
    request = {
        "evseId": 1,
        "chargingProfile": {
            "id": 1,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Dynamic",
            "chargingSchedule": [
                {
                    "id": 1,
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6}],
                }
            ],
        },
    }
    event = _accepted(V21, "SetChargingProfile", request)
    assert isinstance(event, ProfileSet)
    assert event.profile.kind is ProfileKind.DYNAMIC


# --- the property -----------------------------------------------------------------------------

_LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
_PURPOSES = {
    V16: [TX, TX_DEFAULT, MAX],
    V201: [TX, TX_DEFAULT, MAX, EXTERNAL],
    V21: [TX, TX_DEFAULT, MAX, EXTERNAL, ProfilePurpose.PRIORITY, ProfilePurpose.LOCAL_GENERATION],
}
_KINDS = {
    V16: [ABSOLUTE, RECURRING, RELATIVE],
    V201: [ABSOLUTE, RECURRING, RELATIVE],
    V21: [ABSOLUTE, RECURRING, RELATIVE, ProfileKind.DYNAMIC],
}
_TX_IDS = ["T1", "T2", "T3"]
_grid = st.integers(0, 100).map(lambda k: k * Q)


@st.composite
def schedules(
    draw: st.DrawFn, version: OcppVersion, kind: ProfileKind, cycle: int | None
) -> ChargingSchedule:
    unit = draw(st.sampled_from(["A", "W"]))
    offsets = (
        _grid
        if cycle is None
        else st.one_of(_grid, st.integers(1, 100).map(lambda k: cycle - k * Q))
    )
    starts = sorted(draw(st.sets(offsets, min_size=1, max_size=3)))
    if draw(st.integers(0, 4)) > 0:
        starts[0] = 0
    limits = [0, 6, 7.5, 10, 16, 32, -1] if unit == "A" else [0, 4140, 11040, 22080]
    limit = st.sampled_from(limits) | st.none() if version == V21 else st.sampled_from(limits)
    periods = tuple(
        SchedulePeriod(start, draw(limit), draw(st.sampled_from([None, None, 1, 3])))
        for start in starts
    )
    start: datetime | None = None
    if kind in (ABSOLUTE, RECURRING, ProfileKind.DYNAMIC) and draw(st.integers(0, 4)) > 0:
        if cycle is None:
            start = T0 + timedelta(seconds=draw(st.integers(-30, 60)) * Q)
        else:
            back = draw(st.integers(0, 2)) * cycle
            start = T0 + timedelta(seconds=draw(_grid) - back)
    duration = draw(st.sampled_from([None, draw(st.integers(1, 150)) * Q]))
    return ChargingSchedule(unit, periods, duration, start)


@st.composite
def profiles(draw: st.DrawFn, version: OcppVersion) -> ChargingProfile:
    purpose = draw(st.sampled_from(_PURPOSES[version]))
    kind = draw(st.sampled_from(_KINDS[version]))
    recurrency = draw(st.sampled_from(["Daily", "Weekly", None])) if kind == RECURRING else None
    cycle = {"Daily": DAY, "Weekly": WEEK, None: None}[recurrency]
    count = 1 if version == V16 else draw(st.integers(1, 2))
    valid_from = draw(st.sampled_from([None, None, draw(_grid)]))
    valid_to = draw(st.sampled_from([None, None, draw(_grid) + 30 * Q]))
    return ChargingProfile(
        id=draw(st.integers(1, 6)),
        stack_level=draw(st.integers(0, 3)),
        purpose=purpose,
        kind=kind,
        schedules=tuple(draw(schedules(version, kind, cycle)) for _ in range(count)),
        recurrency=recurrency,  # type: ignore[arg-type]
        valid_from=None if valid_from is None else t(valid_from),
        valid_to=None if valid_to is None else t(valid_to),
        transaction_id=draw(st.sampled_from([None, *_TX_IDS])) if purpose == TX else None,
    )


@dataclass
class Scenario:
    """A random history of one charger and questions about it, played on both sides."""

    version: OcppVersion
    ops: list[tuple[Any, ...]] = field(default_factory=list)
    questions: list[tuple[int, float, set[str] | None]] = field(default_factory=list)
    phases: int = 3
    voltage: float = 230.0


@st.composite
def scenarios(draw: st.DrawFn, version: OcppVersion) -> Scenario:
    s = Scenario(
        version, phases=draw(st.sampled_from([1, 3])), voltage=draw(st.sampled_from([230.0, 120.0]))
    )
    at = 0
    #: (connector, stack level, purpose) of the profiles set so far: reusing one with a new id
    #: exercises replacement (1.6) and same-level pairs (2.x).
    slots: list[tuple[int, int, ProfilePurpose]] = []
    for _ in range(draw(st.integers(1, 12))):
        at += draw(st.sampled_from([0, 0, 1, 2, 5, 10])) * Q
        what = draw(st.sampled_from(["set", "set", "set", "set", "clear", "start", "start", "end"]))
        if what == "set":
            by = draw(st.sampled_from(["cpms", "harmone"]))
            connector, profile = draw(st.integers(0, 2)), draw(profiles(version))
            if slots and draw(st.integers(0, 2)) == 0:
                connector, stack, purpose = draw(st.sampled_from(slots))
                tx_id = profile.transaction_id if purpose == TX else None
                profile = replace(profile, stack_level=stack, purpose=purpose, transaction_id=tx_id)
            slots.append((connector, profile.stack_level, profile.purpose))
            s.ops.append(("set", connector, profile, at, by))
        elif what == "clear":
            criteria = {
                "profile_id": draw(st.none() | st.integers(1, 6)),
                "connector_id": draw(st.none() | st.integers(0, 2)),
                "purpose": draw(st.none() | st.sampled_from(_PURPOSES[version])),
                "stack_level": draw(st.none() | st.integers(0, 3)),
            }
            s.ops.append(("clear", criteria))
        else:
            s.ops.append((what, draw(st.integers(1, 2)), draw(st.sampled_from(_TX_IDS)), at))
    for _ in range(2):
        # Mostly after the history (what load management asks), sometimes anywhere in it.
        base = draw(st.sampled_from([at, at, 0]))
        instant = base + draw(st.integers(0, 30)) * Q + draw(st.sampled_from([0, 0, 7.5]))
        by = draw(st.sampled_from([None, None, {"cpms"}, {"harmone"}]))
        s.questions.append((draw(st.integers(1, 2)), instant, by))
    return s


def _play(s: Scenario) -> tuple[ChargerProfiles, RefCharger, dict[int, Transaction]]:
    """The same history on the module and on the reference; the transactions left running."""
    cp, ref = ChargerProfiles(s.version), RefCharger(s.version)
    running: dict[int, Transaction] = {}
    for op in s.ops:
        if op[0] == "set":
            _, connector, profile, at, by = op
            cp = cp.set(connector, profile, t(at), by)
            ref.set(connector, profile, t(at), by)
        elif op[0] == "clear":
            cp = cp.clear(**op[1])
            ref.clear(**op[1])
        elif op[0] == "start":
            _, connector, tx_id, at = op
            if connector not in running and tx_id not in {r.id for r in running.values()}:
                running[connector] = Transaction(tx_id, t(at))
        elif op[1] in running:
            ended = running.pop(op[1])
            cp = cp.transaction_ended(op[1], ended.id)
            ref.end(op[1], ended.id)
    return cp, ref, running


def _agree(s: Scenario) -> None:
    cp, ref, running = _play(s)
    for connector, instant, by in s.questions:
        at, tx = t(instant), running.get(connector)
        got = connector_limit(cp, connector, at, tx, phases=s.phases, voltage=s.voltage, set_by=by)
        expected = ref_limit(ref, connector, at, tx, s.phases, s.voltage, by)
        assert (got.amps, got.station_amps) == expected
        change = ref_next_change(ref, connector, at, tx, s.phases, s.voltage, by)
        if got.until is not None and got.until <= at + timedelta(seconds=HORIZON):
            assert got.until == change
        else:
            assert change is None
            assert got.until is None or got.until > at


def _property(fast: int):  # type: ignore[no-untyped-def]
    return settings(
        max_examples=5_000 if _LONG else fast,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


@_property(150)
@given(scenarios(V16))
def test_agrees_with_the_reference_v16(s: Scenario) -> None:
    _agree(s)


@_property(150)
@given(scenarios(V201))
def test_agrees_with_the_reference_v201(s: Scenario) -> None:
    _agree(s)


@_property(100)
@given(scenarios(V21))
def test_agrees_with_the_reference_v21(s: Scenario) -> None:
    _agree(s)
