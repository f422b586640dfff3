"""HARMON-E's allocator against ACN-Sim's algorithms on real sessions of the Caltech garage.

    python bench/acn_bench.py [--data PATH] [--limits 30,50,70] [--splits week1,week2]
                              [--hours H] [--jobs 2]

ACN-Sim (acnportal 0.3.3, `pip install -e '.[bench]'`) replays the charging sessions of
`--data` (ACN-Sim events, 5-minute periods; by default the two weeks of March 1-14 2019 in
`../shared/data/` beside the repository) on its model of the Caltech ACN (`caltech_acn`: 54
EVSEs at 208 V line to line on the three pairs, two 80 A pods, a delta-wye transformer whose
primary and secondary line currents are limited) with the transformer limited to each of
`--limits` kW. In the same run, on the same sessions, it schedules with ACN-Sim's own
uncontrolled charging, FCFS, EDF, LLF and round robin, and with HARMON-E's `allocate`:

* `HARMON-E`: what OCPP 1.6 tells: arrival, metered draw, the limit obeyed, energy so far. It
  does not know when a car will be full, so a car that fills up within a 5-minute period keeps
  its grant to the end of it;
* `HARMON-E equal`: the same without `continuity_horizon`: above the mins, every car gets the
  same current, whatever it took before;
* `HARMON-E +stops`: as `HARMON-E`, but a car that fills up within the period is capped at what it
  takes. ACN-Sim's algorithms all do that (from each car's remaining energy); a real controller
  gets the same effect from the car stopping (SuspendedEV, draw 0) and re-allocating at once,
  which 5-minute periods cannot show. No departure, no energy need is used otherwise;
* `HARMON-E +departure`: with a departure time and the energy still needed, as 2.0.1's
  NotifyEVChargingNeeds (or an operator's default) gives.

It prints per limit and algorithm: the share of requested energy delivered, Jain's fairness
index of each session's delivered / requested energy, constraint violations (periods in which
any pilot schedule exceeds a line limit of ACN-Sim's own network model), the scheduler's time
per period, and pauses per session (a car switched from charging to 0 A), then HARMON-E's ratios
to round robin and to LLF. HARMON-E's settings were chosen on week 1 (March 1-7); week 2
(March 8-14) is reported as held-out data.

The adapter (`HarmoneScheduler`) does what the controller does: it turns ACN-Sim's sessions
into `Demand`s with the history turn-taking needs (since when a car runs or is paused, the
energy it got), the car's metered draw and the limit it obeyed. ClipperCreek EVSEs accept only
0, 8, 16, 24 or 32 A: a grant between those is rounded to one of them by error diffusion (the
car is owed what rounding down took from it, and rounded up once that reaches the midpoint),
then re-allocated with the car held at that rate (rounded up: that rate or nothing, falling
back to the rate below when it does not fit) so that the others can use the rest. HARMON-E's
options: the allocator's defaults with whole amps and `continuity_horizon` 2 h (`OPTIONS`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import multiprocessing
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from acnportal import acnsim, algorithms  # noqa: E402

from harmone.loadmgmt import (  # noqa: E402
    Allocation,
    AllocationOptions,
    ChargerSpec,
    Demand,
    Node,
    Phase,
    Policy,
    Wiring,
    allocate,
)

DEFAULT_DATA = REPO.parent / "shared" / "data" / "caltech_2019-03-01_to_03-14_5m_208V.json.gz"
PERIOD = timedelta(minutes=5)
#: Period 0 of the data set: midnight of March 1 2019 in California (UTC-8).
START = datetime(2019, 3, 1, 8, 0, tzinfo=UTC)
VOLTAGE = 208.0
PERIODS_PER_DAY = 288
SPLITS = {"week1": (0, 7), "week2": (7, 14), "all": (0, 14)}
CC_RATES = (0, 8, 16, 24, 32)

L1, L2, L3 = Phase.L1, Phase.L2, Phase.L3
#: ACN-Sim's angle of each EVSE group -> the two lines it is connected between.
PAIRS_BY_ANGLE = {30: (L1, L2), -90: (L2, L3), 150: (L3, L1)}


# --- the site -----------------------------------------------------------------------------------


def caltech_tree(info: Any, transformer_kw: float) -> tuple[Node, set[str]]:
    """HARMON-E's tree for `acnsim.sites.caltech_acn(transformer_cap=transformer_kw)`, from its
    `InfrastructureInfo` (what ACN-Sim gives every algorithm).

    The transformer's primary (delta, 480 V, ratio 480/120 = 4) and secondary (208Y/120 V)
    limits are ACN-Sim's: kW / 3 / 277 and kW / 3 / 120 A per line. Returns the tree and the
    ClipperCreek station ids.
    """
    pods: dict[str, list[ChargerSpec]] = {"CC Pod": [], "AV Pod": []}
    others: list[ChargerSpec] = []
    clipper: set[str] = set()
    rows = list(info.constraint_ids)
    for j, station in enumerate(info.station_ids):
        angle = round(float(info.phases[j]))
        is_cc = not info.is_continuous[j] and list(info.allowable_pilots[j]) == list(CC_RATES)
        if is_cc:
            clipper.add(station)
        spec = ChargerSpec(
            station,
            max_current=float(info.max_pilot[j]),
            min_current=8 if is_cc else 6,
            wiring=Wiring.LL,
            phase_rotation=PAIRS_BY_ANGLE[angle],
            voltage=float(info.voltages[j]),
        )
        pod = next((p for p in pods if info.constraint_matrix[rows.index(p), j] != 0), None)
        (pods[pod] if pod else others).append(spec)
    secondary = Node(
        "secondary",
        transformer_kw * 1000 / 3 / 120,
        children=(
            Node("cc-pod", 80, children=tuple(pods["CC Pod"])),
            Node("av-pod", 80, children=tuple(pods["AV Pod"])),
            *others,
        ),
    )
    tree = Node(
        "transformer",
        transformer_kw * 1000 / 3 / 277,
        delta_wye_ratio=4,
        children=(secondary,),
    )
    return tree, clipper


def check_model(network: Any, tree: Node, samples: int = 50) -> float:
    """Largest difference (A) between ACN-Sim's constraint currents and HARMON-E's line currents
    for random rates: the tree must be the same network, or the comparison means nothing."""
    rng = np.random.default_rng(1)
    names = {
        "CC Pod": ("cc-pod", 0),
        "AV Pod": ("av-pod", 0),
        "Secondary A": ("secondary", 0),
        "Secondary B": ("secondary", 1),
        "Secondary C": ("secondary", 2),
        "Primary A": ("transformer", 0),
        "Primary B": ("transformer", 1),
        "Primary C": ("transformer", 2),
    }
    now = START
    worst = 0.0
    for _ in range(samples):
        rates = rng.integers(0, 33, len(network.station_ids)).astype(float)
        acn = np.abs(network.constraint_current(rates.reshape(-1, 1)))[:, 0]
        # Chargers that ignore their profile are counted at their draw: the loads as given.
        fixed = _with_draws(tree, dict(zip(network.station_ids, rates, strict=True)))
        alloc = allocate(
            fixed,
            [Demand(s, 1, now, (r,), now) for s, r in zip(network.station_ids, rates, strict=True)],
            [],
            now,
        )
        for k, name in enumerate(network.constraint_index):
            node, line = names[name]
            worst = max(worst, abs(alloc.node(node).charger_load[line] - acn[k]))
    return worst


def _with_draws(node: Node, rates: dict[str, float]) -> Node:
    kids: list[Node | ChargerSpec] = []
    for child in node.children:
        if isinstance(child, Node):
            kids.append(_with_draws(child, rates))
        else:
            kids.append(
                ChargerSpec(
                    child.id,
                    child.max_current,
                    min_current=child.min_current,
                    wiring=child.wiring,
                    phase_rotation=child.phase_rotation,
                    voltage=child.voltage,
                    ignores_profile=True,
                )
            )
    return Node(
        node.id, node.max_current, delta_wye_ratio=node.delta_wye_ratio, children=tuple(kids)
    )


# --- HARMON-E as an ACN-Sim algorithm -----------------------------------------------------------


class HarmoneScheduler(algorithms.BaseAlgorithm):  # type: ignore[misc]
    """`allocate` once per period, fed what the controller would know."""

    def __init__(
        self,
        transformer_kw: float,
        with_departure: bool,
        options: AllocationOptions,
        sees_stops: bool = False,
        dither: bool = True,
    ) -> None:
        super().__init__()
        self.max_recompute = 1
        self.transformer_kw = transformer_kw
        self.with_departure = with_departure
        self.sees_stops = sees_stops or with_departure
        self.options = options
        self.tree: Node | None = None
        self.clipper: set[str] = set()
        self.running_since: dict[str, datetime] = {}
        self.paused_since: dict[str, datetime] = {}
        self.limit: dict[str, tuple[float, datetime]] = {}
        self.seconds: list[float] = []
        self.pauses: dict[str, int] = {}
        self.dither = dither
        #: ClipperCreek sessions: A per period allocated but not given (rounding), carried over.
        self.owed: dict[str, float] = {}

    def register_interface(self, interface: Any) -> None:
        super().register_interface(interface)
        self.tree, self.clipper = caltech_tree(interface.infrastructure_info(), self.transformer_kw)

    def schedule(self, active_sessions: list[Any]) -> dict[str, list[float]]:
        assert self.tree is not None
        iface = self.interface
        now = START + PERIOD * iface.current_time
        drawn = iface.last_actual_charging_rate
        demands = {
            s.session_id: self._demand(s, now, drawn.get(s.session_id)) for s in active_sessions
        }
        started = time.perf_counter()
        alloc = self.allocate_rounded(demands, now)
        self.seconds.append(time.perf_counter() - started)
        out: dict[str, list[float]] = {}
        for s in active_sessions:
            amps = alloc.connector(s.station_id, 1).limit_to_send
            out[s.station_id] = [amps]
            self._remember(s.session_id, amps, now)
        return out

    def allocate_rounded(self, demands: dict[str, Demand], now: datetime) -> Allocation:
        """`allocate`, with ClipperCreek grants on their allowed rates (see `_round_clipper`)."""
        alloc = self._allocate(demands, {}, {}, now)
        wanted = {g.charger_id: g.limit_to_send for g in alloc.connectors if g.charging}
        caps, floors = self._round_clipper(alloc, demands)
        for _ in range(2 * len(CC_RATES) + 2):
            if not caps and not floors:
                break
            alloc = self._allocate(demands, caps, floors, now)
            wrong = {
                g.charger_id: g.limit_to_send
                for g in alloc.connectors
                if g.charger_id in self.clipper
                and (
                    g.limit_to_send not in CC_RATES
                    or (g.charger_id in floors and g.limit_to_send == 0)
                )
            }
            if not wrong:
                break
            for station, amps in wrong.items():
                # A rate rounded up that does not fit is rounded down instead.
                below = floors.pop(station, None)
                top = amps if below is None else below - 1
                caps[station] = max(r for r in CC_RATES if r <= top)
        else:
            raise AssertionError("ClipperCreek grants did not settle on allowed rates")
        for sid, d in demands.items():
            if d.charger_id in self.clipper:
                given = alloc.connector(d.charger_id, 1).limit_to_send
                owed = self.owed.get(sid, 0.0) + wanted.get(d.charger_id, 0.0) - given
                self.owed[sid] = max(-CC_RATES[1], min(CC_RATES[1], owed))
        return alloc

    def _round_clipper(
        self, alloc: Allocation, demands: dict[str, Demand]
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Caps (rate below) and floors (rate above) for ClipperCreek grants between allowed
        rates. Without `dither`, always the rate below. With it, each car's shortfall is carried
        over (error diffusion), so that over time it gets what it was allocated on average:
        rounded up when the grant plus what it is owed reaches the midpoint."""
        caps: dict[str, float] = {}
        floors: dict[str, float] = {}
        station_session = {d.charger_id: sid for sid, d in demands.items()}
        for g in alloc.connectors:
            if g.charger_id not in self.clipper or g.limit_to_send in CC_RATES:
                continue
            amps = g.limit_to_send
            low = max(r for r in CC_RATES if r <= amps)
            high = min(r for r in CC_RATES if r > amps)
            owed = self.owed.get(station_session[g.charger_id], 0.0)
            if self.dither and amps + owed >= (low + high) / 2 and high <= g.need:
                floors[g.charger_id] = high
            else:
                caps[g.charger_id] = low
        return caps, floors

    def _allocate(
        self,
        demands: dict[str, Demand],
        caps: dict[str, float],
        floors: dict[str, float],
        now: datetime,
    ) -> Allocation:
        assert self.tree is not None
        given = []
        for d in demands.values():
            cap = caps.get(d.charger_id, floors.get(d.charger_id))
            if cap is not None:
                d = _replace(d, car_max=cap if d.car_max is None else min(cap, d.car_max))
            given.append(d)
        tree = _with_mins(self.tree, floors) if floors else self.tree
        return allocate(tree, given, [], now, Policy.EQUAL_SHARE, options=self.options)

    def _demand(self, s: Any, now: datetime, drawn: float | None) -> Demand:
        sid = s.session_id
        last = self.limit.get(sid)
        measured = None
        if last is not None and drawn is not None:
            measured = (max(0.0, float(drawn)),)
        departure = energy_needed = car_max = None
        if self.with_departure:
            departure = START + PERIOD * s.estimated_departure
            energy_needed = s.remaining_demand * 1000
        if self.sees_stops:
            # What the car takes before it stops within this period. ACN-Sim's algorithms cap
            # at it too; a real controller learns it from the stop (SuspendedEV, draw 0) and
            # re-allocates at once, which 5-minute periods cannot show.
            car_max = s.remaining_demand * 1000 / VOLTAGE / (PERIOD / timedelta(hours=1))
        return Demand(
            s.station_id,
            1,
            START + PERIOD * s.arrival,
            measured=measured,
            measured_at=now if measured is not None else None,
            limit_in_force=last[0] if last is not None else None,
            limit_since=last[1] if last is not None else None,
            car_max=car_max,
            departure=departure,
            energy_needed=energy_needed,
            energy_delivered=s.energy_delivered * 1000,
            running_since=self.running_since.get(sid),
            paused_since=self.paused_since.get(sid),
        )

    def _remember(self, sid: str, amps: float, now: datetime) -> None:
        """What the controller keeps: since when each car runs or is paused, its limit."""
        if amps > 0:
            if sid not in self.running_since:
                self.running_since[sid] = now
                self.paused_since.pop(sid, None)
        elif sid in self.running_since:
            del self.running_since[sid]
            self.paused_since[sid] = now
            self.pauses[sid] = self.pauses.get(sid, 0) + 1
        last = self.limit.get(sid)
        if last is None or last[0] != amps:
            self.limit[sid] = (amps, now)


def _with_mins(node: Node, mins: dict[str, float]) -> Node:
    """`node` with the min current of the chargers in `mins` raised: that rate or nothing."""
    from dataclasses import replace

    kids = tuple(
        _with_mins(child, mins)
        if isinstance(child, Node)
        else replace(child, min_current=mins[child.id])
        if child.id in mins
        else child
        for child in node.children
    )
    return replace(node, children=kids)


def _replace(d: Demand, **changes: Any) -> Demand:
    from dataclasses import replace

    return replace(d, **changes)


class CountingBaseline:
    """Wraps an ACN-Sim algorithm to time its periods and count its pauses."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds: list[float] = []
        self.pauses: dict[str, int] = {}
        self._last: dict[str, float] = {}
        original = inner.schedule

        def schedule(active_sessions: list[Any]) -> dict[str, list[float]]:
            started = time.perf_counter()
            out: dict[str, list[float]] = original(active_sessions)
            self.seconds.append(time.perf_counter() - started)
            for s in active_sessions:
                amps = float(out.get(s.station_id, [0.0])[0])
                if amps == 0 and self._last.get(s.session_id, 0) > 0:
                    self.pauses[s.session_id] = self.pauses.get(s.session_id, 0) + 1
                self._last[s.session_id] = amps
            return out

        inner.schedule = schedule


# --- running ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    split: str
    kw: float
    name: str
    delivered: float
    jain: float
    violations: int
    ms_per_period: float
    pauses_per_session: float
    sessions: int


#: The allocator's defaults, with whole amps (the EVSEs take only whole amps) and cars that
#: took more favoured above their min (`continuity_horizon`, chosen on week 1: 1.3 to 2.7 h
#: all gave 83.41-83.48 % at 30 kW, 82.94 % without; see docs/load-management.md).
OPTIONS = AllocationOptions(step=1.0, continuity_horizon=timedelta(hours=2))
#: The same without `continuity_horizon`: the same current for every car above the mins.
EQUAL = AllocationOptions(step=1.0)

ALGORITHMS: dict[str, Callable[[float], Any]] = {
    "uncontrolled": lambda kw: algorithms.UncontrolledCharging(),
    "FCFS": lambda kw: algorithms.SortedSchedulingAlgo(algorithms.first_come_first_served),
    "EDF": lambda kw: algorithms.SortedSchedulingAlgo(algorithms.earliest_deadline_first),
    "LLF": lambda kw: algorithms.SortedSchedulingAlgo(algorithms.least_laxity_first),
    "round robin": lambda kw: algorithms.RoundRobin(algorithms.first_come_first_served),
    "HARMON-E": lambda kw: HarmoneScheduler(kw, False, OPTIONS),
    "HARMON-E equal": lambda kw: HarmoneScheduler(kw, False, EQUAL),
    "HARMON-E +stops": lambda kw: HarmoneScheduler(kw, False, OPTIONS, sees_stops=True),
    "HARMON-E +departure": lambda kw: HarmoneScheduler(kw, True, OPTIONS),
}


def load_events(path: Path) -> str:
    with gzip.open(path, "rt") as f:
        raw = json.load(f)
    # The file holds EventQueue.to_json()'s string, itself JSON-encoded.
    return raw if isinstance(raw, str) else json.dumps(raw)


def _events(data: str, first: int, last: int) -> Any:
    queue = acnsim.EventQueue.from_json(data)
    kept = [e for _, e in queue._queue if first <= e.timestamp < last]
    return acnsim.EventQueue(kept)


def run_one(job: tuple[str, str, float, str, int, int]) -> Result:
    data, split, kw, name, first, last = job
    warnings.simplefilter("ignore")
    events = _events(data, first, last)
    network = acnsim.sites.caltech_acn(basic_evse=False, voltage=VOLTAGE, transformer_cap=kw)
    algo = ALGORITHMS[name](kw)
    counter = None if isinstance(algo, HarmoneScheduler) else CountingBaseline(algo)
    start = START - timedelta(hours=8)  # ACN-Sim's clock: local time
    sim = acnsim.Simulator(
        network, algo, events, start.replace(tzinfo=None), period=5, verbose=False
    )
    sim.run()
    evs = list(sim.ev_history.values())
    shares = [
        min(1.0, ev.energy_delivered / ev.requested_energy) for ev in evs if ev.requested_energy > 0
    ]
    jain = sum(shares) ** 2 / (len(shares) * sum(x * x for x in shares)) if shares else 1.0
    currents = np.abs(network.constraint_current(sim.pilot_signals))
    over = currents > (network.magnitudes[:, None] + 1e-6)
    timing = algo if counter is None else counter
    return Result(
        split=split,
        kw=kw,
        name=name,
        delivered=acnsim.analysis.proportion_of_energy_delivered(sim),
        jain=jain,
        violations=int(over.any(axis=0).sum()),
        ms_per_period=1000 * statistics.fmean(timing.seconds) if timing.seconds else 0.0,
        pauses_per_session=sum(timing.pauses.values()) / max(1, len(evs)),
        sessions=len(evs),
    )


def print_table(results: list[Result]) -> None:
    by = {(r.split, r.kw, r.name): r for r in results}
    for split in dict.fromkeys(r.split for r in results):
        print(f"\n== {split} ==")
        print(
            f"{'limit':>6} {'algorithm':<21} {'energy %':>8} {'Jain':>6} {'violations':>10} "
            f"{'ms/period':>9} {'pauses/session':>14} {'vs RR':>7} {'vs LLF':>7}"
        )
        for kw in dict.fromkeys(r.kw for r in results if r.split == split):
            rr = by.get((split, kw, "round robin"))
            llf = by.get((split, kw, "LLF"))
            for name in ALGORITHMS:
                r = by.get((split, kw, name))
                if r is None:
                    continue
                vs_rr = f"{r.delivered / rr.delivered:.3f}" if rr else "-"
                vs_llf = f"{r.delivered / llf.delivered:.3f}" if llf else "-"
                print(
                    f"{kw:>4g}kW {name:<21} {100 * r.delivered:>8.2f} {r.jain:>6.3f} "
                    f"{r.violations:>10d} {r.ms_per_period:>9.2f} {r.pauses_per_session:>14.2f} "
                    f"{vs_rr:>7} {vs_llf:>7}"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limits", default="30,50,70", help="transformer limits, kW")
    parser.add_argument("--splits", default="week1,week2", help=", ".join(SPLITS))
    parser.add_argument(
        "--hours", type=float, default=None, help="only the first H hours of each split"
    )
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    data = load_events(args.data)
    names = [n.strip() for n in args.algorithms.split(",")]
    network = acnsim.sites.caltech_acn(basic_evse=False, voltage=VOLTAGE, transformer_cap=50)
    probe = acnsim.Simulator(
        network, algorithms.UncontrolledCharging(), acnsim.EventQueue(), START, verbose=False
    )
    info = acnsim.Interface(probe).infrastructure_info()
    error = check_model(network, caltech_tree(info, 50)[0])
    print(f"model check: HARMON-E's line currents differ from ACN-Sim's by at most {error:.2g} A")
    if error > 0.01:
        print("the tree does not match ACN-Sim's network", file=sys.stderr)
        return 1
    jobs = []
    for split in args.splits.split(","):
        day0, day1 = SPLITS[split]
        first = day0 * PERIODS_PER_DAY
        last = day1 * PERIODS_PER_DAY
        if args.hours is not None:
            last = min(last, first + math.ceil(args.hours * 12))
        for kw in (float(x) for x in args.limits.split(",")):
            jobs.extend((data, split, kw, name, first, last) for name in names)
    print(f"{len(jobs)} simulations of 5-minute periods, {args.jobs} at a time ...", flush=True)
    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            results = pool.map(run_one, jobs, chunksize=1)
    else:
        results = [run_one(job) for job in jobs]
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
