"""A site under load on a manual clock: 20 model chargers through the real state, plan and loop.

One site, a two-level tree::

    grid  63 A ── hall  32 A, metered by pushed readings, safety current 16 A: H1..H8
               ── yard  40 A: Y1..Y8 (Y8's car ignores its profiles)
               ── R1..R4 directly under the grid connection

OCPP 1.6 and 2.0.1 alternate; 3-phase chargers on three phase rotations and 1-phase chargers on
L1/L2/L3; cars that take less than their charger offers. A model charger (tests/loadsim.py)
answers within 50 ms and applies a lower limit 0.1 to 0.3 s after accepting it (an increase at
once: the worst case); Y8's car draws its max whatever it is told. Cars arrive and leave in
waves, the building load behind the hall's meter changes, and the meter's readings stop for a
while. 28 s of simulated time run in well under a second: every wait is on a `ManualClock`.

At every instant (every 0.1 s and whenever a charger applies a new limit), per node and grid
phase, the building load plus the sum over chargers of max(limit applied, draw) stays within the
node's limit — and, while the hall's meter counts as failed, the hall's chargers within its safety
current — except within the reaction time after an event that lowers what a node allows (see
tests/loadsim.py). The charger whose car ignores its profile is found out within
`reaction_grace` + a tick + a meter interval of simulated time, and stays flagged.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from loadsim import ModelCharger, SiteSim

from harmone.loadmgmt import ChargerSpec, Demand, Measurement, Node, allocate
from harmone.loadmgmt.config import parse_config
from harmone.loadmgmt.model import AllocationOptions
from harmone.loadmgmt.state import OVERDRAW, SiteLoadState, Timing
from harmone.ocpp.events import MeterReading, Sample, TransactionEnded, TransactionStarted
from harmone.ocpp.versions import OcppVersion

TICK = 0.15
METER_INTERVAL = 0.2
GRACE = 0.6
TIMING = Timing(
    tick=TICK,
    reaction_grace=GRACE,
    tolerance=1.0,
    call_timeout=3.0,
    debounce=0.02,
    apply_bound=0.3,
    answer_grace=0.5,
    give_back_after=2.0,
    retry_interval=2.0,
)
OPTIONS = AllocationOptions(
    settle_time=timedelta(seconds=0.6),
    meter_max_age=timedelta(seconds=1.0),
    draw_max_age=timedelta(seconds=3),
)
TOLERANCE = 1e-3  # A: float sums of limits that are multiples of 0.1 A
DETECTION = GRACE + TICK + METER_INTERVAL + TIMING.debounce
ROTATIONS = (("L1", "L2", "L3"), ("L2", "L3", "L1"), ("L3", "L1", "L2"))
CONFIG: dict[str, Any] = {
    "policy": "equal_share",
    "resend_step": 1.0,
    "min_interval": 1.0,
    "tree": {
        "id": "grid",
        "max_current": 63,
        "children": [
            {"id": "hall", "max_current": 32, "metered": True, "safety_current": 16},
            {"id": "yard", "max_current": 40},
        ],
    },
}


def _chargers() -> list[ModelCharger]:
    one_phase = {"H4": ("L2",), "H8": ("L3",), "Y3": ("L3",), "Y6": ("L1",), "R2": ("L1",)}
    names = [f"H{i}" for i in range(1, 9)] + [f"Y{i}" for i in range(1, 9)]
    names += [f"R{i}" for i in range(1, 5)]
    return [
        ModelCharger(
            cid,
            {"H": "hall", "Y": "yard", "R": "grid"}[cid[0]],
            max_current=16.0 if cid == "Y8" else 32.0,
            rotation=one_phase.get(cid, ROTATIONS[i % 3]),
            version=OcppVersion.V16 if i % 2 == 0 else OcppVersion.V201,
            answer_delay=(0.01, 0.03, 0.05)[i % 3],
            apply_delay=(0.1, 0.2, 0.3)[i % 3],
            disobeys=cid == "Y8",
        )
        for i, cid in enumerate(names)
    ]


async def _scenario() -> tuple[SiteSim, list[float], set[str], float]:
    sim = SiteSim(
        CONFIG,
        _chargers(),
        TIMING,
        OPTIONS,
        meter_interval=METER_INTERVAL,
        building={"hall": [6.0, 5.0, 7.0]},
    )
    await sim.start()
    t0 = sim.clock.t
    txs = iter(range(1, 1000))
    flags: list[float] = []  # when Y8 was seen flagged
    hall_sources: set[str] = set()

    def wave(arrive: dict[str, float], leave: tuple[str, ...] = ()) -> None:
        for cid in leave:
            sim.leave(cid)
        for cid, car in arrive.items():
            sim.arrive(cid, car, str(next(txs)))

    def meter(up: bool) -> None:
        sim.meter_up["hall"] = up

    plan = [
        (0.5, lambda: wave({"H1": 32, "H2": 32, "H3": 32, "H4": 32, "Y1": 32, "Y2": 10,
                            "Y8": 32, "R1": 32})),
        (4.8, lambda: sim.set_building("hall", [12.0, 10.0, 11.0])),
        (7.6, lambda: wave({"H5": 32, "H6": 13, "Y3": 32, "Y4": 32, "Y5": 32, "R2": 32},
                           leave=("H1",))),
        (10.0, lambda: meter(False)),
        (13.5, lambda: wave({"H7": 32, "Y6": 32, "R3": 32, "H1": 32},
                            leave=("Y8", "H3", "R1", "Y1"))),
        (16.0, lambda: meter(True)),
        (18.8, lambda: wave({"Y8": 32, "H8": 32, "Y7": 32, "R4": 32, "Y1": 13},
                            leave=("H2", "Y3"))),
        (21.8, lambda: sim.set_building("hall", [9.0, 12.0, 10.0])),
        (24.8, lambda: wave({"H3": 32}, leave=("H4", "Y5", "R2", "H6"))),
        (28.0, lambda: None),
    ]  # fmt: skip
    first_y8: float | None = None
    try:
        for at, action in plan:
            while sim.clock.t < t0 + at - 1e-9:
                await sim.run(min(0.1, t0 + at - sim.clock.t))
                if sim.state.chargers["Y8"].flagged == OVERDRAW:
                    flags.append(sim.clock.t)
                hall = sim.ctl.last.node("hall") if sim.ctl.last else None
                if hall is not None:
                    hall_sources.add(hall.limit_source.value)
            action()
            if first_y8 is None and sim.chargers["Y8"].tx_id is not None:
                first_y8 = sim.clock.t
    finally:
        await sim.stop()
    assert first_y8 is not None
    return sim, flags, hall_sources, first_y8


def test_twenty_chargers_never_exceed_a_fuse_after_the_reaction_time() -> None:
    sim, flags, hall_sources, first_y8 = asyncio.run(_scenario())
    assert not sim.violations, sim.violations[:5]
    assert not sim.small_grants, sim.small_grants[:5]
    # Not vacuous: every charger got its profiles, cars were lowered and raised, the hall fell
    # to its safety current while its meter was silent, and Y8 was found out and stayed so.
    assert all(c.received for c in sim.chargers.values())
    assert sum(len(c.applied) for c in sim.chargers.values()) > 60
    assert "safety" in hall_sources and "configured" in hall_sources
    assert flags and flags[0] <= first_y8 + DETECTION + METER_INTERVAL, (flags[:1], first_y8)
    assert flags[-1] - flags[0] >= 20  # flagged from then on, across its next car too


def test_a_stale_submeter_keeps_its_building_load_counted_above_it() -> None:
    """A sub-cluster's meter goes stale (its building load was last read at 12 A): its own
    chargers are held to the safety current, and its parent still keeps room for its building
    load — the rest of its fuse — instead of sharing that out as if the load were gone."""
    now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    hall = Node("hall", 32, safety_current=16, metered=True, children=(ChargerSpec("H", 32),))
    tree = Node("grid", 63, children=(hall, ChargerSpec("R1", 32), ChargerSpec("R2", 32)))
    since = now - timedelta(hours=1)
    demands = [Demand(c, 1, since) for c in ("H", "R1", "R2")]
    stale = Measurement("hall", (12.0, 12.0, 12.0), now - timedelta(minutes=5))
    a = allocate(tree, demands, [stale], now)
    assert a.node("hall").limit == 16
    granted = sum(a.connector(c, 1).limit_to_send for c in ("H", "R1", "R2"))
    assert granted + 12.0 <= 63 + TOLERANCE


# -- the obedience rules, on the state alone ------------------------------------------------------

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
RULES = Timing(reaction_grace=30.0, apply_bound=5.0)
_SITE = parse_config(
    {
        "min_interval": 0,
        "tree": {"id": "grid", "max_current": 20},
        "default_charger": {"max_current": 16},
    }
)


def _at(t: float) -> datetime:
    return NOW + timedelta(seconds=t)


def _state() -> SiteLoadState:
    state = SiteLoadState()
    for cid in ("A", "B", "C"):
        state.connected(cid, OcppVersion.V16, booted=True)
    return state


def _plug(state: SiteLoadState, cid: str, t: float) -> None:
    state.apply(cid, TransactionStarted(1, str(ord(cid))), _SITE.settings_for(cid), RULES, _at(t))


def _grant(state: SiteLoadState, cid: str, amps: float, t: float) -> None:
    state.call_sent(cid, 1, amps, _at(t))
    state.call_accepted(cid, 1, str(ord(cid)), amps, None, _SITE.settings_for(cid), RULES, _at(t))


def _reads(state: SiteLoadState, t: float, **amps: float) -> None:
    for cid, a in amps.items():
        samples = tuple(Sample("Current.Import", a, f"L{i}", "A") for i in (1, 2, 3))
        state.apply(
            cid, MeterReading(1, None, None, samples), _SITE.settings_for(cid), RULES, _at(t)
        )


def test_a_charger_found_ignoring_its_profile_stays_flagged_between_cars() -> None:
    state = _state()
    _plug(state, "A", 0)
    _plug(state, "B", 0)
    _grant(state, "A", 10, 0)
    _grant(state, "B", 10, 0)
    for t in (10, 41):
        _reads(state, t, A=16, B=10)
        state.review(_SITE, RULES, OPTIONS, _at(t))
    assert state.chargers["A"].flagged == OVERDRAW
    state.apply("A", TransactionEnded(str(ord("A")), 1), _SITE.settings_for("A"), RULES, _at(50))
    state.review(_SITE, RULES, OPTIONS, _at(50))  # nothing shows the charger obeys now
    assert state.chargers["A"].flagged == OVERDRAW
    a = allocate(state.tree(_SITE), state.demands(_SITE), [], _at(50), options=OPTIONS)
    grant = a.connector("A", 1)
    assert grant.reserved and grant.per_phase == (16.0, 16.0, 16.0)


def test_a_new_lower_limit_does_not_restart_the_time_over_the_limit() -> None:
    state = _state()
    _plug(state, "A", 0)
    _grant(state, "A", 10, 0)
    _reads(state, 10, A=16)
    state.review(_SITE, RULES, OPTIONS, _at(10))
    assert not state.chargers["A"].flagged
    _grant(state, "A", 6.6, 20)  # a third car: a lower limit explains nothing about its draw
    _reads(state, 41, A=16)
    state.review(_SITE, RULES, OPTIONS, _at(41))  # over for 31 s (grace 30 s), limit 21 s old
    assert state.chargers["A"].flagged == OVERDRAW


def test_a_car_seen_obeying_lifts_the_flag() -> None:
    state = _state()
    _plug(state, "A", 0)
    _grant(state, "A", 10, 0)
    for t in (10, 41):
        _reads(state, t, A=16)
        state.review(_SITE, RULES, OPTIONS, _at(t))
    assert state.chargers["A"].flagged == OVERDRAW
    _reads(state, 50, A=9.5)
    state.review(_SITE, RULES, OPTIONS, _at(50))
    assert state.chargers["A"].flagged is None
