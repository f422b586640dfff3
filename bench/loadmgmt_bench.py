"""Load management benchmark: energy, reaction time and allocation cost, against baselines.

    python bench/loadmgmt_bench.py [--hours 8] [--step 30] [--chargers 24] [--seed 7]
                                   [--events 40] [--alloc-sizes 10,100,1000] [--repeat 20]

Three parts, each printing ratios against baselines measured in the same run (nothing is
asserted; run it on a quiet machine and compare runs, not single numbers):

(a) **Energy over a day-part.** A pure simulation with an injected clock (no sockets): a site
    whose 200 A grid connection is metered and also feeds a building (a day profile, per phase),
    and `--chargers` charge points (every fourth one is 1-phase, phase rotations cycle), half of
    them behind a 100 A garage sub-distribution. Cars arrive over the first three quarters of
    `--hours` (seeded), each with an energy need of 5-40 kWh, a max current of 16 or 32 A, 1 or 3
    phases, and a dwell of 1-5 h (a car that finds no free charge point leaves). Every
    `--step` s each strategy sets each car's current:
    * **HARMON-E**: `allocate` (equal share) with the building reading and each car's last draw,
      as the controller feeds it; cars obey at once (the step is far longer than a car's ramp);
    * **uncontrolled**: every car at its max; its energy is not available safely, so the share
      of steps in which it breaks a fuse, and by how much, is printed with it;
    * **static split**: each charge point fixed at fuse / number of charge points (the lowest
      along its path), and the same computed with the building's peak taken off the fuse
      first (the only static split that is safe).
    Printed: energy delivered, share of the capacity used (energy delivered / what the grid
    connection left after the building over the whole day-part), cars fully served, and the
    share of steps over a fuse.
(b) **Event to profile, over real sockets.** HARMON-E runs in this process with a simulated CPMS
    and four simulated chargers (`ocpp` package, 1.6 and 2.0.1) on 127.0.0.1. `--events` times
    each: a car plugs in (the transaction start is sent) until its TxProfile is received by the
    charger — a first grant waits for the other car's decrease to be applied, which without
    meter readings is `Timing.apply_bound` (5 s) — and a building reading is POSTed until the
    charger receives the new limit. Also the
    controller's own measure (event seen -> profile sent). Baseline: a relayed round trip
    (Heartbeat through HARMON-E to the CPMS and back) in the same run. p50 / p99 in ms.
(d) **Enforcement** (the controller loop with 20 in-process model chargers, tests/loadsim.py):
    event -> decrease sent (p50 / p99, real time, `SystemClock`) when a dynamic limit drops, with
    one charger that never answers among the 20; and on a `ManualClock`: how long a car that
    draws 4 A of its grant takes to give the rest to another car, how long charging takes to
    resume after a dynamic limit of 0 is lifted, and how often any grant changes direction over
    a 10-minute run with that capped car (flapping).
(c) **Allocation time** of `allocate` for `--alloc-sizes` connectors in a three-level tree with
    imbalance limits, 80 % of connectors charging with readings: best of `--repeat`
    (time.perf_counter), and the cost per connector relative to the smallest size.

Everything stops by itself; only 127.0.0.1 is used; the database is a temporary SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from harmone.config import RelayConfig, ServerConfig
from harmone.loadmgmt import (
    Allocation,
    AllocationOptions,
    ChargerSpec,
    Demand,
    Measurement,
    Node,
    Phase,
    Policy,
    allocate,
)
from harmone.loadmgmt.state import Timing
from harmone.services.accounts import Accounts
from harmone.sim import OcppVersion, SimulatedCharger, SimulatedCpms
from harmone.web.serve import running_server

VOLTAGE = 230.0
MIN_CURRENT = 6.0
START = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
ROTATIONS = (
    (Phase.L1, Phase.L2, Phase.L3),
    (Phase.L2, Phase.L3, Phase.L1),
    (Phase.L3, Phase.L1, Phase.L2),
)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- (a) energy over a day-part ---------------------------------------------------------------


@dataclass
class Car:
    arrive: float  # s from the start
    leave: float
    need_kwh: float
    max_current: float
    phases: int
    charger: int = -1  # index of the charge point it got; -1: none was free
    delivered_kwh: float = 0.0

    def wants(self) -> bool:
        return self.delivered_kwh < self.need_kwh - 1e-9


@dataclass(frozen=True)
class Site:
    grid_fuse: float
    garage_fuse: float
    chargers: tuple[ChargerSpec, ...]
    garage: frozenset[int]  # indices of the charge points in the garage
    hours: float

    def building(self, t: float) -> tuple[float, float, float]:
        """Building load behind the grid meter at `t` s: a base, a day bump, phase imbalance."""
        day = max(0.0, math.sin(math.pi * t / (self.hours * 3600)))
        wobble = 3.0 * math.sin(t / 900.0)
        base = 12.0 + 22.0 * day + wobble
        return (base * 1.0, base * 0.8, base * 1.2)

    def tree(self) -> Node:
        garage = [c for i, c in enumerate(self.chargers) if i in self.garage]
        rest = [c for i, c in enumerate(self.chargers) if i not in self.garage]
        return Node(
            "grid",
            self.grid_fuse,
            metered=True,
            children=(Node("garage", self.garage_fuse, children=tuple(garage)), *rest),
        )


def make_site(chargers: int, hours: float) -> Site:
    specs = tuple(
        ChargerSpec(
            f"CP{i:03d}",
            32.0,
            phases=1 if i % 4 == 3 else 3,
            phase_rotation=(ROTATIONS[i % 3][0],) if i % 4 == 3 else ROTATIONS[i % 3],
        )
        for i in range(chargers)
    )
    return Site(200.0, 100.0, specs, frozenset(range(chargers // 2)), hours)


def make_cars(site: Site, rng: random.Random) -> list[Car]:
    horizon = site.hours * 3600
    rate = 2.2 * len(site.chargers) / (0.75 * horizon)  # about two cars per charge point
    cars: list[Car] = []
    t = rng.expovariate(rate)
    while t < 0.75 * horizon:
        cars.append(
            Car(
                arrive=t,
                leave=min(horizon, t + rng.uniform(1, 5) * 3600),
                need_kwh=rng.uniform(5, 40),
                max_current=rng.choice((16.0, 32.0)),
                phases=1 if rng.random() < 0.4 else 3,
            )
        )
        t += rng.expovariate(rate)
    busy_until = [0.0] * len(site.chargers)
    for car in cars:  # the same charge point for every strategy
        free = [i for i, until in enumerate(busy_until) if until <= car.arrive]
        if free:
            car.charger = rng.choice(free)
            busy_until[car.charger] = car.leave
    return cars


def _grid_phases(spec: ChargerSpec, car: Car) -> tuple[Phase, ...]:
    return spec.grid_phases[: min(spec.phases, car.phases)]


Strategy = Callable[[float, list[Car]], dict[int, float]]


@dataclass
class Outcome:
    name: str
    energy_kwh: float = 0.0
    served: int = 0
    steps: int = 0
    steps_over: int = 0
    worst_over: float = 0.0


def static_limits(site: Site, building_peak: float) -> list[float]:
    """Per charge point: fuse / charge points below, the lowest along its path."""
    n_all, n_garage = len(site.chargers), len(site.garage)
    out = []
    for i in range(n_all):
        limit = (site.grid_fuse - building_peak) / n_all
        if i in site.garage:
            limit = min(limit, site.garage_fuse / n_garage)
        out.append(math.floor(limit * 10) / 10)
    return out


class HarmoneStrategy:
    """`allocate` each step, fed like the controller feeds it: readings and limits in force."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.tree = site.tree()
        self.options = AllocationOptions()
        self.limit: dict[int, tuple[float, datetime]] = {}  # car id -> (limit, since)
        self.draw: dict[int, tuple[float, ...]] = {}
        self.allocations = 0

    def __call__(self, t: float, present: list[Car]) -> dict[int, float]:
        now = START + timedelta(seconds=t)
        demands = []
        for car in present:
            spec = self.site.chargers[car.charger]
            limit = self.limit.get(id(car))
            demands.append(
                Demand(
                    spec.id,
                    1,
                    START + timedelta(seconds=car.arrive),
                    measured=self.draw.get(id(car)),
                    measured_at=now if id(car) in self.draw else None,
                    limit_in_force=limit[0] if limit else None,
                    limit_since=limit[1] if limit else None,
                )
            )
        reading = Measurement("grid", self.site.building(t), now)
        a: Allocation = allocate(
            self.tree, demands, [reading], now, Policy.EQUAL_SHARE, options=self.options
        )
        self.allocations += 1
        out = {}
        for car in present:
            spec = self.site.chargers[car.charger]
            grant = a.connector(spec.id, 1).limit_to_send
            old = self.limit.get(id(car))
            if old is None or old[0] != grant:
                self.limit[id(car)] = (grant, now)
            out[id(car)] = grant
        return out

    def observe(self, car: Car, amps: float) -> None:
        """What the charger's next MeterValues will say: the draw on each charger phase."""
        spec = self.site.chargers[car.charger]
        used = len(_grid_phases(spec, car))
        self.draw[id(car)] = tuple(amps if k < used else 0.0 for k in range(spec.phases))


def run_day(site: Site, cars: list[Car], name: str, step: float) -> Outcome:
    for car in cars:
        car.delivered_kwh = 0.0
    harmone = HarmoneStrategy(site) if name == "HARMON-E" else None
    peak = max(max(site.building(t)) for t in range(0, int(site.hours * 3600) + 1, 60))
    fixed = {
        "static split": static_limits(site, 0.0),
        "static split, safe": static_limits(site, peak),
    }.get(name)
    out = Outcome(name)
    t = 0.0
    horizon = site.hours * 3600
    while t < horizon:
        present = [c for c in cars if c.charger >= 0 and c.arrive <= t < c.leave]
        if harmone is not None:
            limits = harmone(t, present)
        elif fixed is not None:
            limits = {id(c): fixed[c.charger] for c in present}
        else:
            limits = {id(c): site.chargers[c.charger].max_current for c in present}
        load = {"grid": [0.0, 0.0, 0.0], "garage": [0.0, 0.0, 0.0]}
        for car in present:
            amps = min(limits[id(car)], car.max_current) if car.wants() else 0.0
            amps = amps if amps >= MIN_CURRENT else 0.0  # IEC 61851: below 6 A, nothing
            phases = _grid_phases(site.chargers[car.charger], car)
            for p in phases:
                load["grid"][p.index] += amps
                if car.charger in site.garage:
                    load["garage"][p.index] += amps
            kwh = amps * VOLTAGE * len(phases) * step / 3_600_000
            kwh = min(kwh, car.need_kwh - car.delivered_kwh)
            car.delivered_kwh += kwh
            out.energy_kwh += kwh
            if harmone is not None:
                harmone.observe(car, amps)
        over = 0.0
        for k, b in enumerate(site.building(t)):
            over = max(over, load["grid"][k] + b - site.grid_fuse)
            over = max(over, load["garage"][k] - site.garage_fuse)
        out.steps += 1
        if over > 1e-6:
            out.steps_over += 1
            out.worst_over = max(out.worst_over, over)
        t += step
    out.served = sum(1 for c in cars if c.charger >= 0 and not c.wants())
    return out


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a (baseline is 0)"


def part_a(args: argparse.Namespace) -> None:
    site = make_site(args.chargers, args.hours)
    cars = make_cars(site, random.Random(args.seed))
    plugged = [c for c in cars if c.charger >= 0]
    capacity = 0.0
    t = 0.0
    while t < args.hours * 3600:
        capacity += sum(site.grid_fuse - b for b in site.building(t)) * VOLTAGE * args.step
        t += args.step
    capacity /= 3_600_000
    names = ("HARMON-E", "uncontrolled", "static split", "static split, safe")
    started = time.perf_counter()
    results = {name: run_day(site, cars, name, args.step) for name in names}
    elapsed = time.perf_counter() - started
    print(
        f"(a) energy over a {args.hours:g} h day-part, step {args.step:g} s: "
        f"{len(site.chargers)} charge points, grid {site.grid_fuse:g} A (metered, building peak "
        f"{max(max(site.building(t)) for t in range(0, int(args.hours * 3600), 60)):.0f} A), "
        f"garage {site.garage_fuse:g} A; {len(cars)} cars, {len(plugged)} got a charge point, "
        f"needing {sum(c.need_kwh for c in plugged):.0f} kWh ({elapsed:.1f} s)"
    )
    print(
        f"{'strategy':<20} {'energy kWh':>10} {'capacity used':>13} {'cars served':>11} "
        f"{'steps over a fuse':>17} {'worst overload A':>16}"
    )
    for r in results.values():
        print(
            f"{r.name:<20} {r.energy_kwh:>10.1f} {r.energy_kwh / capacity:>13.1%} "
            f"{r.served:>7}/{len(plugged):<3} {r.steps_over / r.steps:>17.1%} "
            f"{r.worst_over:>16.1f}"
        )
    h, u = results["HARMON-E"], results["uncontrolled"]
    for base in ("uncontrolled", "static split", "static split, safe"):
        b = results[base]
        print(
            f"ratio HARMON-E / {base}: energy {_ratio(h.energy_kwh, b.energy_kwh)}, "
            f"cars served {_ratio(h.served, b.served)}"
        )
    print(
        f"the uncontrolled baseline breaks a fuse in {u.steps_over / u.steps:.1%} of the steps, "
        f"by up to {u.worst_over:.1f} A: its energy is not available safely"
    )


# --- (b) event to profile over real sockets ----------------------------------------------------


class TimedCharger(SimulatedCharger):
    """A simulated charger that notes when each TxProfile arrives (loop time, limit)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tx_profiles: list[tuple[float, float]] = []
        self.profile_arrived = asyncio.Event()

    def _install_profile(self, connector_id: int, profile: dict[str, Any]) -> str:
        status = super()._install_profile(connector_id, profile)
        if status == "Accepted" and profile.get("chargingProfilePurpose") == "TxProfile":
            limit = self.current_limit(connector_id)
            self.tx_profiles.append((asyncio.get_running_loop().time(), limit or 0.0))
            self.profile_arrived.set()
        return status

    async def next_profile(self, after: int, timeout: float = 30.0) -> tuple[float, float]:
        async with asyncio.timeout(timeout):
            while len(self.tx_profiles) <= after:
                self.profile_arrived.clear()
                await self.profile_arrived.wait()
        return self.tx_profiles[after]


@dataclass
class Latencies:
    rtt: list[float] = field(default_factory=list)
    plug_in: list[float] = field(default_factory=list)
    reading: list[float] = field(default_factory=list)
    controller: list[float] = field(default_factory=list)


async def part_b(events: int) -> Latencies:
    out = Latencies()
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="harmone-lm-bench-") as tmp:
        config = ServerConfig(
            db_url=f"sqlite:///{Path(tmp) / 'bench.db'}",
            host="127.0.0.1",
            port=0,
            relay=RelayConfig(upstream_connect_timeout=2.0, flood_rate=1e6, flood_burst=1_000_000),
            shutdown_grace=2.0,
            load_timing=Timing(),
        )
        async with SimulatedCpms() as cpms, running_server(config) as srv:
            store = srv.runtime.store
            await Accounts(store).create_user("bench@example.com", "bench password 123", "admin")
            token = await Accounts(store).create_token("bench@example.com")
            async with httpx.AsyncClient(
                base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
            ) as api:
                r = await api.post(
                    "/api/v1/sites", json={"name": "bench", "type": "cloud", "cpms_url": cpms.url}
                )
                r.raise_for_status()
                uid, url = r.json()["uid"], r.json()["ocpp_url"]
                base = f"/api/v1/sites/{uid}/load-management"
                r = await api.put(
                    base,
                    json={
                        "min_interval": 0,
                        "resend_step": 1,
                        "tree": {"id": "grid", "max_current": 40, "metered": True},
                        "default_charger": {"max_current": 32},
                    },
                )
                r.raise_for_status()
                await api.post(f"{base}/nodes/grid/readings", json={"current": [10, 10, 10]})
                versions: tuple[OcppVersion, ...] = ("1.6", "2.0.1", "1.6", "2.0.1")
                chargers = [
                    TimedCharger(url, f"LAT{i}", v, heartbeat_interval=300, meter_interval=300)
                    for i, v in enumerate(versions)
                ]
                try:
                    for sim in chargers:
                        await sim.connect()
                        await sim.boot()
                        await sim.status(1, "Available")
                    await _measure(out, chargers, api, base, events, loop)
                finally:
                    for sim in chargers:
                        await sim.close()
            ctl = srv.runtime.loadmgmt.controller(uid)
            out.controller = list(ctl.reaction_times)
    return out


async def _measure(
    out: Latencies,
    chargers: list[TimedCharger],
    api: httpx.AsyncClient,
    base: str,
    events: int,
    loop: asyncio.AbstractEventLoop,
) -> None:
    first = chargers[0]
    for _ in range(events):  # the baseline: a relayed round trip
        t0 = loop.time()
        await first.heartbeat()
        out.rtt.append(loop.time() - t0)
    # One car charges all along, so that each new car also lowers it.
    await first.start_transaction(1, "BENCH-0")
    await first.next_profile(0)
    for i in range(events):
        sim = chargers[1 + i % (len(chargers) - 1)]
        # keep the grid's meter fresh (meter_max_age 60 s): a stale one would suspend charging
        r = await api.post(f"{base}/nodes/grid/readings", json={"current": [10, 10, 10]})
        r.raise_for_status()
        await _until_limit(first, 30)
        seen = len(sim.tx_profiles)
        t0 = loop.time()
        await sim.start_transaction(1, f"BENCH-{i}")
        at, _ = await sim.next_profile(seen)
        out.plug_in.append(at - t0)
        await sim.stop_transaction(1)
        # The first car is raised again (30 A: 40 A fuse, 10 A of building) before the next.
        await _until_limit(first, 30)
    for i in range(events):
        seen = len(first.tx_profiles)
        building = 20 if i % 2 == 0 else 10  # 40 A fuse: the car gets 20 A / 30 A
        t0 = loop.time()
        r = await api.post(f"{base}/nodes/grid/readings", json={"current": [building] * 3})
        r.raise_for_status()
        at, _ = await first.next_profile(seen)
        out.reading.append(at - t0)


async def _until_limit(sim: TimedCharger, limit: float) -> None:
    """Until the last TxProfile `sim` received says `limit`."""
    while not (sim.tx_profiles and sim.tx_profiles[-1][1] == limit):
        await sim.next_profile(len(sim.tx_profiles))


def print_b(lat: Latencies) -> None:
    base50, base99 = percentile(lat.rtt, 0.5), percentile(lat.rtt, 0.99)
    print(
        "(b) event -> SetChargingProfile over real sockets, through HARMON-E "
        "(ms; x = relative to a relayed round trip)"
    )
    print(f"{'event':<36} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'p50 x':>7} {'p99 x':>7}")
    rows = (
        ("relayed round trip (baseline)", lat.rtt),
        ("car plugs in -> TxProfile received", lat.plug_in),
        ("reading POSTed -> TxProfile received", lat.reading),
        ("controller: event seen -> sent", lat.controller),
    )
    for name, values in rows:
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        print(
            f"{name:<36} {len(values):>5} {p50 * 1000:>8.2f} {p99 * 1000:>8.2f} "
            f"{p50 / base50:>7.2f} {p99 / base99:>7.2f}"
        )


# --- (c) allocation time ------------------------------------------------------------------------


def random_site(
    connectors: int, rng: random.Random
) -> tuple[Node, list[Demand], list[Measurement]]:
    """Root -> clusters of up to 50 connectors -> sub-clusters of up to 10, imbalance limits."""
    now = START
    specs = []
    demands = []
    for i in range(connectors):
        phases = 1 if rng.random() < 0.3 else 3
        rotation = ROTATIONS[rng.randrange(3)]
        spec = ChargerSpec(
            f"C{i:05d}",
            rng.choice((16.0, 32.0)),
            phases=phases,
            phase_rotation=rotation[:phases],
        )
        specs.append(spec)
        if rng.random() < 0.8:
            draw = rng.uniform(0, spec.max_current)
            one = phases == 3 and rng.random() < 0.3  # a 1-phase car on a 3-phase charger
            measured = tuple(draw if k == 0 or not one else 0.0 for k in range(phases))
            demands.append(
                Demand(
                    spec.id,
                    1,
                    now - timedelta(minutes=rng.uniform(1, 300)),
                    measured=measured,
                    measured_at=now - timedelta(seconds=30),
                    limit_in_force=spec.max_current,
                    limit_since=now - timedelta(minutes=10),
                )
            )
    clusters = []
    for c in range(0, connectors, 50):
        subs = tuple(
            Node(f"S{s:05d}", 10 * 12.0, children=tuple(specs[s : min(s + 10, c + 50)]))
            for s in range(c, min(c + 50, connectors), 10)
        )
        clusters.append(Node(f"K{c:05d}", 50 * 10.0, max_imbalance=32.0, children=subs))
    root = Node("grid", max(63.0, connectors * 8.0), metered=True, children=tuple(clusters))
    return root, demands, [Measurement("grid", (20.0, 15.0, 25.0), now)]


def part_c(sizes: list[int], repeat: int, seed: int) -> None:
    print(f"(c) allocation time, best of {repeat} (time.perf_counter)")
    print(f"{'connectors':>10} {'ms':>9} {'us/connector':>13} {'x per connector':>16}")
    first: float | None = None
    for n in sizes:
        tree, demands, readings = random_site(n, random.Random(seed + n))
        best = math.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            allocate(tree, demands, readings, START)
            best = min(best, time.perf_counter() - t0)
        per = best / n
        first = first or per
        print(f"{n:>10} {best * 1000:>9.3f} {per * 1e6:>13.2f} {per / first:>16.2f}")


# --- (d) enforcement ---------------------------------------------------------------------------


def _loadsim() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import loadsim  # the tests' model site; shared so that both measure the same thing

    return loadsim


D_TIMING = Timing()


@dataclass
class Enforcement:
    decrease: list[float] = field(default_factory=list)
    give_back: float = math.nan
    resume: float = math.nan
    flaps: int = 0
    changes: int = 0


def _twenty(loadsim: Any) -> list[Any]:
    rotations = (("L1", "L2", "L3"), ("L2", "L3", "L1"), ("L3", "L1", "L2"))
    return [
        loadsim.ModelCharger(
            f"D{i:02d}",
            "grid",
            rotation=rotations[i % 3],
            answer_delay=0.01 + 0.01 * (i % 5),
            apply_delay=0.2,
        )
        for i in range(20)
    ]


async def part_d(events: int) -> Enforcement:
    from harmone.clock import SystemClock

    loadsim = _loadsim()
    out = Enforcement()
    config = {"min_interval": 10, "tree": {"id": "grid", "max_current": 400}}
    sim = loadsim.SiteSim(
        config, _twenty(loadsim), D_TIMING, AllocationOptions(), clock=SystemClock()
    )
    await sim.start()
    try:
        for i, c in enumerate(sim.chargers.values()):
            sim.arrive(c.cid, 32.0, str(i + 1))
        await sim.run(3.0)
        next(iter(sim.chargers.values())).answer_delay = None  # silent from now on
        for i in range(events):
            sim.set_dynamic("grid", 120.0 if i % 2 == 0 else 300.0)
            await sim.run(0.4 if i % 2 == 0 else 6.0)
        out.decrease = list(sim.ctl.decrease_times)
    finally:
        await sim.stop()
    # give-back and flapping: a car that takes 4 A next to one that takes all it gets
    config = {"min_interval": 10, "tree": {"id": "grid", "max_current": 32}}
    # G1's car takes 4 A (its charger's min current is 0 so that the model car draws it)
    pair = [
        loadsim.ModelCharger("G1", "grid", min_current=0.0),
        loadsim.ModelCharger("G2", "grid"),
    ]
    sim = loadsim.SiteSim(config, pair, D_TIMING, AllocationOptions(), meter_interval=5.0)
    await sim.start()
    try:
        t0 = sim.clock.t  # G1's car draws 4 A from its first grant on
        sim.arrive("G1", 4.0, "1")
        sim.arrive("G2", 32.0, "2")
        await sim.run(600.0, step=1.0)
        raised = [t for t, limit in pair[1].applied if t > t0 and limit > 16]
        out.give_back = raised[0] - t0 if raised else math.nan
        for c in pair:
            limits = [limit for t, limit in c.applied if t > t0 + 60]
            steps = [b - a for a, b in itertools.pairwise(limits) if b != a]
            out.changes += len(steps)
            out.flaps += sum(1 for a, b in itertools.pairwise(steps) if a * b < 0)
        sim.set_dynamic("grid", 0)
        await sim.run(15.0)
        t1 = sim.clock.t
        sim.set_dynamic("grid", None)
        await sim.run(10.0, step=0.01)
        resumed = [t for t, limit in pair[1].applied if t > t1 and limit > 0]
        out.resume = resumed[0] - t1 if resumed else math.nan
    finally:
        await sim.stop()
    return out


def print_d(e: Enforcement) -> None:
    print("(d) enforcement, 20 model chargers in process (timings: defaults of Timing)")
    print(
        f"event -> decrease sent, one silent charger among 20: n {len(e.decrease)} "
        f"p50 {percentile(e.decrease, 0.5) * 1000:.2f} ms "
        f"p99 {percentile(e.decrease, 0.99) * 1000:.2f} ms"
    )
    print(
        f"give-back: a car drawing 4 A of 16 A returns the rest in {e.give_back:.1f} s (simulated)"
    )
    print(f"resume after a dynamic limit of 0 is lifted: {e.resume:.2f} s (simulated)")
    print(f"flapping over 10 simulated minutes: {e.flaps} reversals in {e.changes} grant changes")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--step", type=float, default=30.0)
    parser.add_argument("--chargers", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--alloc-sizes", default="10,100,1000")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    if args.chargers < 4 or args.events < 1 or args.repeat < 1 or args.step <= 0:
        parser.error("need at least 4 chargers, 1 event, 1 repeat and a positive step")
    # The in-process server would log every charger it closes at the end of part (b).
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    print(f"HARMON-E load management benchmark (seed {args.seed}, Python {sys.version.split()[0]})")
    part_a(args)
    print()
    print_b(asyncio.run(part_b(args.events)))
    print()
    part_c([int(s) for s in args.alloc_sizes.split(",")], args.repeat, args.seed)
    print()
    print_d(asyncio.run(part_d(args.events)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
