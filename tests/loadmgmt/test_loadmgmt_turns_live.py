"""Taking turns in the live load manager (issue 9 point 6), on a manual clock.

A 12 A site has room for two cars at their 6 A minimum; three cars are plugged in and each
wants 16 A. The real state, plan and controller loop (tests/loadsim.py) must give every car a
turn: a car paused for want of the minimum waits at most `max_wait` (plus the protected run of
the car it replaces, `min_run`), and the site limit holds at every instant. This depends on the
state filling `Demand.running_since` / `paused_since` from the grants the chargers accepted:
without them every car counts as waiting since it arrived, and the two first cars keep the
current for as long as they stay.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from loadsim import ModelCharger, SiteSim

from harmone.loadmgmt.model import AllocationOptions
from harmone.loadmgmt.state import Timing

TIMING = Timing(
    tick=0.5,
    reaction_grace=2.0,
    tolerance=1.0,
    call_timeout=3.0,
    debounce=0.02,
    apply_bound=0.3,
    answer_grace=0.5,
    give_back_after=5.0,
    retry_interval=2.0,
)
MIN_RUN = 20.0
MAX_WAIT = 40.0
OPTIONS = AllocationOptions(
    settle_time=timedelta(seconds=2),
    meter_max_age=timedelta(seconds=5),
    draw_max_age=timedelta(seconds=10),
    min_run=timedelta(seconds=MIN_RUN),
    max_wait=timedelta(seconds=MAX_WAIT),
)
CONFIG = {"min_interval": 1.0, "tree": {"id": "grid", "max_current": 12}}
SLACK = 5.0  # s: a round, the calls and a charger's apply delay


def _runs(c: ModelCharger, end: float) -> list[tuple[float, float]]:
    """The intervals during which the charger applied a limit of at least its min current."""
    out: list[tuple[float, float]] = []
    start: float | None = None
    for t, limit in c.applied:
        if limit >= c.min_current and start is None:
            start = t
        elif limit < c.min_current and start is not None:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, end))
    return out


async def _three_cars(seconds: float) -> tuple[SiteSim, float]:
    chargers = [
        ModelCharger(cid, "grid", max_current=16.0, rotation=("L1",), apply_delay=0.2)
        for cid in ("A", "B", "C")
    ]
    sim = SiteSim(CONFIG, chargers, TIMING, OPTIONS, meter_interval=1.0)
    await sim.start()
    t0 = sim.clock.monotonic()
    try:
        for i, cid in enumerate(("A", "B", "C")):
            sim.arrive(cid, 16.0, str(i + 1))
            await sim.run(1.0, step=0.25)
        await sim.run(seconds, step=0.25)
    finally:
        await sim.stop()
    return sim, t0


def test_three_cars_on_room_for_two_all_take_turns_within_the_turn_period() -> None:
    horizon = 240.0
    sim, t0 = asyncio.run(_three_cars(horizon))
    end = sim.clock.monotonic()
    assert not sim.violations, sim.violations[:5]
    assert not sim.small_grants, sim.small_grants[:5]
    runs = {cid: _runs(c, end) for cid, c in sim.chargers.items()}
    # Every car charged, and more than once: turns go round, not just once.
    for cid, r in runs.items():
        assert r, f"car {cid} never charged: {runs}"
    assert sum(len(r) for r in runs.values()) >= 5, runs
    # No flapping: a turn, once started, lasts its protected run (the last may still go on).
    for cid, r in runs.items():
        short = [(a, b) for a, b in r if b < end and b - a < MIN_RUN]
        assert not short, (cid, short, runs)
    # No car waits longer than a turn period: its wait, plus the run it must let finish.
    period = MAX_WAIT + MIN_RUN + SLACK
    for cid, r in runs.items():
        starts = [t0] + [b for _, b in r]
        gaps = [a - s for s, (a, _) in zip(starts, r, strict=False)]
        assert max(gaps) <= period, (cid, gaps, runs)
        if r[-1][1] < end:  # paused now: since when
            assert end - r[-1][1] <= period, (cid, runs)
    state = sim.state
    energies = {cid: state.chargers[cid].txs[1].energy_integrated_wh for cid in sim.chargers}
    # Energy was integrated from the readings (no register): each car took a share.
    assert all(e > 0 for e in energies.values()), energies
