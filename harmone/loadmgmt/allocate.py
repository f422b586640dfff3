"""Share a site's current between the connectors that are charging, never exceeding a fuse.

`allocate` is pure: the same tree, demands, readings, time and policy give the same allocation.

How it works (see docs/load-management.md for the guarantees):

1. The tree is flattened. Each node gets its effective limit (fuse, dynamic limit, safety current
   when its meter is failed, stale or missing) and its non-charger load. Connectors that cannot
   be controlled (idle ones, chargers that ignore their profile) become fixed reservations.
2. Every node and phase is a constraint ``sum(grants) <= slack``; a node with a max imbalance
   adds one constraint per ordered pair of phases (``load[p] - load[q] <= D``). A connector
   has coefficient +1 on a node constraint for each grid phase it loads, and +1 / -1 on the
   imbalance constraints of the phases it loads / does not load.
3. Policies order connectors into tiers (one tier for equal share, one per priority, one per
   car for first come first served). Per tier: *admit* in order, each at its min current if that
   fits (else it stays paused at 0 A); *fill* by progressive filling (water-filling) from there
   up to each car's need; *top up* leftover steps round robin.
4. *Settle*: pass over all connectors until no connector can be raised by one step nor a paused
   one started at its min: the allocation is then work-conserving up to the step.

All arithmetic is in integer milliamps. Limits are rounded down and loads up on the way in, so
the integer solution is never less safe than the float input.

Termination: fill advances a level by at least one step (bounded by the largest need) or
freezes at least one car per iteration; every productive settle pass adds at least one step to
a bounded sum of grants, and a pass without change ends it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from datetime import datetime

from harmone.errors import ConfigError
from harmone.loadmgmt.model import (
    DEFAULT_OPTIONS,
    Allocation,
    AllocationOptions,
    ChargerSpec,
    ConnectorGrant,
    Demand,
    Limitation,
    LimitKind,
    LimitSource,
    Measurement,
    MeterState,
    Node,
    NodeLoad,
    Phase,
    PhaseCurrents,
    Policy,
)

__all__ = ["allocate"]

_PHASES = (Phase.L1, Phase.L2, Phase.L3)
#: Ordered pairs (p, q) of an imbalance constraint load[p] - load[q] <= D.
_PAIRS = ((0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1))
#: Round-robin top-up rounds per tier before the remainder is handed out in order; leftovers
#: after water-filling are below one step per car, so more rounds would rarely change anything.
_ROUND_ROBIN_ROUNDS = 8
#: Float noise allowance when converting amps to milliamps (1 nA).
_EPS = 1e-6


def _ma_down(amps: float) -> int:
    return math.floor(amps * 1000 + _EPS)


def _ma_up(amps: float) -> int:
    return math.ceil(amps * 1000 - _EPS)


def _amps(milliamps: int) -> float:
    return milliamps / 1000


def _triple(values: Sequence[int]) -> PhaseCurrents:
    return (_amps(values[0]), _amps(values[1]), _amps(values[2]))


class _FlatNode:
    """A node with its effective limit and the loads counted against it (mutable work state)."""

    __slots__ = (
        "charger_load",
        "fixed",
        "imbalance_base",
        "limit",
        "meter",
        "nc",
        "node",
        "parent",
        "source",
    )

    def __init__(self, node: Node, parent: int) -> None:
        self.node = node
        self.parent = parent  # index of the parent node, -1 for the root
        self.limit = 0
        self.source = LimitSource.CONFIGURED
        self.meter = MeterState.NONE
        self.nc = [0, 0, 0]  # non-charger load, mA
        self.fixed = [0, 0, 0]  # reservations of uncontrollable connectors below, mA
        self.charger_load = [0, 0, 0]  # fixed + grants, filled in at the end
        self.imbalance_base = -1  # index of its first imbalance constraint, -1 if none


class _Conn:
    """One connector of the tree and how it is counted."""

    __slots__ = (
        "charger",
        "connector_id",
        "demand",
        "fixed",
        "info",
        "need",
        "neg",
        "path",
        "phases",
        "pos",
        "smallest",
    )

    def __init__(self, charger: ChargerSpec, connector_id: int, path: tuple[int, ...]) -> None:
        self.charger = charger
        self.connector_id = connector_id
        self.path = path  # node indices, root first
        self.demand: Demand | None = None
        self.fixed: list[int] | None = None  # reservation per grid phase when uncontrollable
        self.phases: tuple[int, ...] = ()  # grid phase indices it loads
        self.need = 0  # mA; 0 = wants nothing (or cannot be granted anything)
        self.smallest = 0  # mA; its min current rounded up to the step
        self.info: list[Limitation] = []
        self.pos: list[int] = []  # constraints its grant uses up
        self.neg: list[int] = []  # constraints its grant frees (imbalance only)


def allocate(
    tree: Node,
    demands: Iterable[Demand],
    measurements: Iterable[Measurement],
    now: datetime,
    policy: Policy = Policy.EQUAL_SHARE,
    *,
    options: AllocationOptions = DEFAULT_OPTIONS,
) -> Allocation:
    """Share the current of `tree` between the connectors in `demands` at time `now`.

    Raises `ConfigError` for input that names unknown nodes, chargers or connectors, repeats
    one, or gives a reading with the wrong number of phases.
    """
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise ConfigError(f"now must be a timezone-aware datetime, got {now!r}")
    if not isinstance(tree, Node):
        raise ConfigError("the tree must be a Node")
    step = max(1, round(options.step * 1000))
    nodes, conns = _flatten(tree)
    _apply_measurements(nodes, measurements, now, options)
    _attach_demands(conns, demands)
    for conn in conns:
        _classify(conn, nodes, now, options, step)
    slack = _constraints(nodes, conns)
    solver = _Solver(slack, conns, step)
    tiers = _tiers([c for c in range(len(conns)) if conns[c].need > 0], conns, policy)
    for tier in tiers:
        admitted = solver.admit(tier)
        solver.fill(admitted)
        if len(admitted) > 1:
            solver.round_robin(admitted)
        solver.settle(admitted)
    solver.settle([c for tier in tiers for c in tier])
    return _result(nodes, conns, solver, now, policy)


# --- building the problem -----------------------------------------------------------------------


def _flatten(tree: Node) -> tuple[list[_FlatNode], list[_Conn]]:
    nodes: list[_FlatNode] = []
    conns: list[_Conn] = []
    stack: list[tuple[Node | ChargerSpec, tuple[int, ...]]] = [(tree, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, Node):
            nodes.append(_FlatNode(item, path[-1] if path else -1))
            here = (*path, len(nodes) - 1)
            stack.extend((child, here) for child in reversed(item.children))
        else:
            conns.extend(_Conn(item, cid, path) for cid in item.connector_ids)
    return nodes, conns


def _apply_measurements(
    nodes: list[_FlatNode],
    measurements: Iterable[Measurement],
    now: datetime,
    options: AllocationOptions,
) -> None:
    index = {flat.node.id: i for i, flat in enumerate(nodes)}
    readings: dict[int, Measurement] = {}
    for m in measurements:
        if m.node_id not in index:
            raise ConfigError(f"measurement for unknown node {m.node_id!r}")
        i = index[m.node_id]
        if i in readings:
            raise ConfigError(f"two measurements for node {m.node_id!r}")
        readings[i] = m
    # Children come after their parent in pre-order, so walking backwards sees every child's
    # non-charger load before its parent needs it.
    children_nc: list[list[int]] = [[0, 0, 0] for _ in nodes]
    for i in range(len(nodes) - 1, -1, -1):
        flat = nodes[i]
        node = flat.node
        reading = readings.get(i)
        if reading is None:
            flat.meter = MeterState.MISSING if node.metered else MeterState.NONE
        elif reading.failed:
            flat.meter = MeterState.FAILED
        elif now - reading.at > options.meter_max_age:
            flat.meter = MeterState.STALE
        else:
            flat.meter = MeterState.OK
        nc = children_nc[i]
        if flat.meter is MeterState.OK and reading is not None:
            # The meter sees its sub-clusters' load too; if it reads less than they do (the
            # readings were not taken at the same instant), believe the larger.
            nc = [max(n, _ma_up(max(0.0, amps))) for n, amps in zip(nc, reading.load, strict=True)]
        flat.nc = nc
        if flat.parent >= 0:
            # Above a node whose meter is not working, its building load is unknown but
            # bounded: its chargers get at most its safety current, and the whole subtree can
            # never draw more than its fuse. So the parent counts the rest of the fuse as
            # building load; counting 0 would hand that load's share to other chargers.
            passed = nc
            if flat.meter in (MeterState.FAILED, MeterState.STALE, MeterState.MISSING):
                bound = _ma_up(max(0.0, node.max_current - node.safety_current))
                passed = [max(n, bound) for n in nc]
            up = children_nc[flat.parent]
            for p in range(3):
                up[p] += passed[p]
        candidates = [(_ma_down(node.max_current), LimitSource.CONFIGURED)]
        if node.dynamic_limit is not None:
            candidates.append((_ma_down(node.dynamic_limit), LimitSource.DYNAMIC))
        if flat.meter in (MeterState.FAILED, MeterState.STALE, MeterState.MISSING):
            candidates.append((_ma_down(node.safety_current), LimitSource.SAFETY))
        flat.limit, flat.source = min(candidates, key=lambda c: c[0])


def _attach_demands(conns: list[_Conn], demands: Iterable[Demand]) -> None:
    by_key = {(c.charger.id, c.connector_id): c for c in conns}
    chargers = {c.charger.id for c in conns}
    for d in demands:
        conn = by_key.get(d.key)
        if conn is None:
            what = "connector" if d.charger_id in chargers else "charger"
            raise ConfigError(f"demand for unknown {what}: {d.charger_id!r} #{d.connector_id}")
        if conn.demand is not None:
            raise ConfigError(f"two demands for {d.charger_id!r} #{d.connector_id}")
        if d.measured is not None and len(d.measured) != conn.charger.phases:
            raise ConfigError(
                f"demand for {d.charger_id!r} #{d.connector_id}: {len(d.measured)} measured "
                f"phase(s) for a {conn.charger.phases}-phase charger"
            )
        conn.demand = d


def _fresh_draw(d: Demand, now: datetime, options: AllocationOptions) -> tuple[float, ...] | None:
    if d.measured is None or d.measured_at is None or now - d.measured_at > options.draw_max_age:
        return None
    return d.measured


def _classify(
    conn: _Conn, nodes: list[_FlatNode], now: datetime, options: AllocationOptions, step: int
) -> None:
    """Decide whether `conn` is reserved or granted, which grid phases it loads, and its need."""
    charger = conn.charger
    grid = [p.index for p in charger.grid_phases]
    d = conn.demand
    draw = _fresh_draw(d, now, options) if d is not None else None
    if d is None or charger.ignores_profile:
        # Idle connectors may start drawing their TxDefault limit (or, ignoring profiles, their
        # max) before the next allocation; charging ones that ignore profiles draw what they draw.
        fixed = [0, 0, 0]
        if d is not None and draw is not None:
            for i, amps in zip(grid, draw, strict=True):
                fixed[i] = _ma_up(amps)
        else:
            amps = charger.max_current if charger.ignores_profile else charger.tx_default_limit
            for i in grid:
                fixed[i] = _ma_up(amps)
        conn.fixed = fixed
        conn.phases = tuple(sorted(i for i in grid if fixed[i] > 0)) or tuple(sorted(grid))
        for i in conn.path:
            flat_fixed = nodes[i].fixed
            for p in range(3):
                flat_fixed[p] += fixed[p]
        if d is not None:
            how = "its measured draw" if draw is not None else "its max current (draw unknown)"
            conn.info.append(
                Limitation(LimitKind.IGNORES_PROFILE, f"ignores its charging profile: {how}")
            )
        return

    # A car drawing on some phases only (a 1-phase car on a 3-phase charger) loads only those;
    # without a telling reading, assume all of them.
    threshold = options.active_phase_threshold
    active = [g for g, amps in zip(grid, draw, strict=True) if amps >= threshold] if draw else []
    conn.phases = tuple(sorted(active or grid))

    smallest = max(step, -(-_ma_up(charger.min_current) // step) * step)
    largest = _ma_down(charger.max_current) // step * step
    conn.smallest = smallest
    if largest < smallest:
        conn.info.append(
            Limitation(LimitKind.NOT_GRANTABLE, "no grantable current between its min and max")
        )
        return
    need = largest
    if d.car_max is not None:
        car = _ma_down(d.car_max) // step * step
        if car == 0:
            conn.info.append(Limitation(LimitKind.CAR_MAX, "the car takes no current"))
            return
        if car < need:
            need = max(smallest, car)
            conn.info.append(
                Limitation(LimitKind.CAR_MAX, f"the car takes at most {d.car_max:g} A")
            )
    if (
        draw is not None
        and d.measured_at is not None
        and d.limit_in_force is not None
        and d.limit_since is not None
        and d.measured_at - d.limit_since >= options.settle_time
    ):
        drawn = max(amps for g, amps in zip(grid, draw, strict=True) if g in conn.phases)
        if drawn < d.limit_in_force - options.give_back_below:
            estimate = -(-_ma_up(drawn + options.give_back_margin) // step) * step
            if estimate < need:
                need = max(smallest, estimate)
                conn.info.append(
                    Limitation(
                        LimitKind.CAR_DRAW,
                        f"the car draws {drawn:g} A of {d.limit_in_force:g} A: "
                        f"granted its draw plus {options.give_back_margin:g} A",
                    )
                )
    conn.need = need


def _constraints(nodes: list[_FlatNode], conns: list[_Conn]) -> list[int]:
    """Initial slack of every constraint; also fills each controllable connector's pos/neg."""
    slack = [0] * (3 * len(nodes))
    for i, flat in enumerate(nodes):
        for p in range(3):
            slack[3 * i + p] = flat.limit - flat.nc[p] - flat.fixed[p]
        if flat.node.max_imbalance is not None:
            flat.imbalance_base = len(slack)
            bound = _ma_down(flat.node.max_imbalance)
            slack.extend(bound - (flat.fixed[p] - flat.fixed[q]) for p, q in _PAIRS)
    for conn in conns:
        if conn.fixed is not None or conn.need == 0:
            continue
        loads = set(conn.phases)
        for i in conn.path:
            conn.pos.extend(3 * i + p for p in conn.phases)
            base = nodes[i].imbalance_base
            if base >= 0:
                for j, (p, q) in enumerate(_PAIRS):
                    if p in loads and q not in loads:
                        conn.pos.append(base + j)
                    elif q in loads and p not in loads:
                        conn.neg.append(base + j)
    return slack


def _tiers(controllable: list[int], conns: list[_Conn], policy: Policy) -> list[list[int]]:
    """Groups served one after the other, each in admission order (earliest arrival first)."""

    def arrival(c: int) -> tuple[datetime, str, int]:
        conn = conns[c]
        assert conn.demand is not None  # only charging connectors are controllable
        return (conn.demand.charging_since, conn.charger.id, conn.connector_id)

    ordered = sorted(controllable, key=arrival)
    if policy is Policy.FIRST_COME_FIRST_SERVED:
        return [[c] for c in ordered]
    if policy is Policy.PRIORITY:
        tiers: dict[int, list[int]] = {}
        for c in ordered:
            tiers.setdefault(conns[c].charger.priority, []).append(c)
        return [tiers[prio] for prio in sorted(tiers, reverse=True)]
    return [ordered] if ordered else []


# --- solving ------------------------------------------------------------------------------------


class _Solver:
    """Integer grants under linear constraints; grants only ever go up."""

    __slots__ = ("grant", "need", "neg", "pos", "slack", "smallest", "step")

    def __init__(self, slack: list[int], conns: list[_Conn], step: int) -> None:
        self.slack = slack
        self.step = step
        self.grant = [0] * len(conns)
        self.need = [c.need for c in conns]
        self.smallest = [c.smallest for c in conns]
        self.pos = [c.pos for c in conns]
        self.neg = [c.neg for c in conns]

    def room(self, c: int) -> int:
        """How much more connector `c` could be granted without breaking a constraint."""
        slack = self.slack
        return min(slack[k] for k in self.pos[c])

    def add(self, c: int, amount: int) -> None:
        self.grant[c] += amount
        slack = self.slack
        for k in self.pos[c]:
            slack[k] -= amount
        for k in self.neg[c]:
            slack[k] += amount

    def admit(self, tier: list[int]) -> list[int]:
        """Start each car of `tier` at its min current, in order, while that fits."""
        admitted = []
        for c in tier:
            if self.room(c) >= self.smallest[c]:
                self.add(c, self.smallest[c])
                admitted.append(c)
        return admitted

    def fill(self, members: list[int]) -> None:
        """Progressive filling: raise a common level; a car stops at its need or a tight constraint.

        A car starts rising once the level reaches its min. Rates (cars rising per constraint)
        make each constraint's remaining room a division away, so an iteration costs only the
        constraints touched by rising cars.
        """
        grant, need, slack, pos, neg, step = (
            self.grant,
            self.need,
            self.slack,
            self.pos,
            self.neg,
            self.step,
        )
        waiting = sorted((c for c in members if grant[c] < need[c]), key=lambda c: (grant[c], c))
        if not waiting:
            return
        level = grant[waiting[0]]
        next_wait = 0
        rising: dict[int, None] = {}  # insertion-ordered set
        rate: dict[int, int] = {}
        needs: list[tuple[int, int]] = []

        def start(c: int) -> None:
            rising[c] = None
            heapq.heappush(needs, (need[c], c))
            shift(c, 1)

        def stop(c: int) -> None:
            del rising[c]
            grant[c] = level
            shift(c, -1)

        def shift(c: int, sign: int) -> None:
            # Zero rates are dropped so that each iteration only visits constraints that move;
            # a car on L1 and one on L2 cancel out on an L1-L2 imbalance constraint.
            for ks, s in ((pos[c], sign), (neg[c], -sign)):
                for k in ks:
                    r = rate.get(k, 0) + s
                    if r:
                        rate[k] = r
                    else:
                        del rate[k]

        while True:
            while next_wait < len(waiting) and grant[waiting[next_wait]] <= level:
                start(waiting[next_wait])
                next_wait += 1
            while needs and (needs[0][1] not in rising or needs[0][0] <= level):
                _, c = heapq.heappop(needs)
                if c in rising:
                    stop(c)
            if not rising:
                if next_wait == len(waiting):
                    return
                level = grant[waiting[next_wait]]
                continue
            delta = needs[0][0] - level
            if next_wait < len(waiting):
                delta = min(delta, grant[waiting[next_wait]] - level)
            tight = []
            for k, r in rate.items():
                if r > 0:
                    room = slack[k] // (r * step) * step
                    if room <= 0:
                        tight.append(k)
                    elif room < delta:
                        delta = room
            if tight:
                for k in tight:
                    for c in [c for c in rising if k in pos[c]]:
                        stop(c)
                continue
            level += delta
            for k, r in rate.items():
                slack[k] -= r * delta

    def round_robin(self, members: list[int]) -> None:
        """Hand out what filling left (less than a step per car) one step per car per round."""
        step, grant, need = self.step, self.grant, self.need
        for _ in range(_ROUND_ROBIN_ROUNDS):
            moved = False
            for c in members:
                if grant[c] + step <= need[c] and self.room(c) >= step:
                    self.add(c, step)
                    moved = True
            if not moved:
                return

    def settle(self, order: list[int]) -> None:
        """Raise each car in `order` as far as it goes, start paused ones that fit, until stable."""
        step, grant, need, smallest = self.step, self.grant, self.need, self.smallest
        changed = True
        while changed:
            changed = False
            for c in order:
                if grant[c] == 0:
                    if self.room(c) < smallest[c]:
                        continue
                    self.add(c, smallest[c])
                    changed = True
                more = min(need[c] - grant[c], self.room(c) // step * step)
                if more > 0:
                    self.add(c, more)
                    changed = True


# --- the result ---------------------------------------------------------------------------------


def _result(
    nodes: list[_FlatNode],
    conns: list[_Conn],
    solver: _Solver,
    now: datetime,
    policy: Policy,
) -> Allocation:
    grants: list[ConnectorGrant] = []
    # Many cars share a bottleneck; their reasons are the same objects, built once.
    why: dict[tuple[int, ...], list[Limitation]] = {}
    for c, conn in enumerate(conns):
        g = solver.grant[c]
        per_phase = [0, 0, 0]
        if conn.fixed is not None:
            per_phase = conn.fixed
        else:
            for p in conn.phases:
                per_phase[p] = g
        for i in conn.path:
            load = nodes[i].charger_load
            for p in range(3):
                load[p] += per_phase[p]
        grants.append(_grant(conn, c, per_phase, nodes, solver, why))
    loads = []
    for i, flat in enumerate(nodes):
        charger = flat.charger_load
        total = [flat.nc[p] + charger[p] for p in range(3)]
        loads.append(
            NodeLoad(
                node_id=flat.node.id,
                limit=_amps(flat.limit),
                limit_source=flat.source,
                meter=flat.meter,
                non_charger_load=_triple(flat.nc),
                charger_load=_triple(charger),
                load=_triple(total),
                headroom=_triple([solver.slack[3 * i + p] for p in range(3)]),
                imbalance=_amps(max(charger) - min(charger)),
            )
        )
    return Allocation(at=now, policy=policy, connectors=tuple(grants), nodes=tuple(loads))


def _grant(
    conn: _Conn,
    c: int,
    per_phase: list[int],
    nodes: list[_FlatNode],
    solver: _Solver,
    why: dict[tuple[int, ...], list[Limitation]],
) -> ConnectorGrant:
    g = solver.grant[c]
    reasons = list(conn.info)
    if conn.fixed is None and conn.need > 0 and g < conn.need:
        wanted = solver.step if g > 0 else conn.smallest
        slack = solver.slack
        tight = tuple(k for k in conn.pos if slack[k] < wanted)
        # The paused reason depends on the min current, so it is part of the key.
        key = (-conn.smallest, *tight) if g == 0 else tight
        if key not in why:
            why[key] = _why(list(tight), nodes, solver)
            if g == 0:
                why[key].insert(
                    0,
                    Limitation(
                        LimitKind.PAUSED_BELOW_MIN,
                        f"paused: its min current {_amps(conn.smallest):g} A does not fit",
                    ),
                )
        reasons.extend(why[key])
    if conn.fixed is not None:
        limit = _amps(max(conn.fixed))
        need = limit
    else:
        limit = _amps(g)
        need = _amps(conn.need)
    return ConnectorGrant(
        charger_id=conn.charger.id,
        connector_id=conn.connector_id,
        charging=conn.demand is not None,
        reserved=conn.fixed is not None,
        limit_to_send=limit,
        per_phase=_triple(per_phase),
        phases=tuple(_PHASES[p] for p in conn.phases),
        need=need,
        reasons=tuple(reasons),
    )


def _why(tight: list[int], nodes: list[_FlatNode], solver: _Solver) -> list[Limitation]:
    """Describe the constraints in `tight` for a person, one reason per node and kind."""
    fuses: dict[int, list[int]] = {}
    pairs: dict[int, list[tuple[int, int]]] = {}
    for k in tight:
        if k < 3 * len(nodes):
            fuses.setdefault(k // 3, []).append(k % 3)
            continue
        for i, flat in enumerate(nodes):
            if 0 <= k - flat.imbalance_base < len(_PAIRS):
                pairs.setdefault(i, []).append(_PAIRS[k - flat.imbalance_base])
    out = []
    for i, phases in fuses.items():
        flat = nodes[i]
        node_id = flat.node.id
        on = tuple(_PHASES[p] for p in phases)
        names = ", ".join(p.name for p in on)
        if flat.limit == 0:
            kind = LimitKind.SUSPENDED
            text = f"suspended: node {node_id!r} has a {flat.source} limit of 0 A"
        else:
            kind = LimitKind.NODE_LIMIT
            free = ", ".join(f"{_amps(solver.slack[3 * i + p]):g}" for p in phases)
            text = (
                f"limited by node {node_id!r} on {names} "
                f"({flat.source} limit {_amps(flat.limit):g} A, free: {free} A)"
            )
        out.append(Limitation(kind, text, node_id, on))
    for i, found in pairs.items():
        flat = nodes[i]
        high = tuple(_PHASES[p] for p in sorted({p for p, _ in found}))
        low = sorted({_PHASES[q].name for _, q in found})
        out.append(
            Limitation(
                LimitKind.IMBALANCE,
                f"limited by node {flat.node.id!r}: {', '.join(p.name for p in high)} may not "
                f"exceed {', '.join(low)} by more than {flat.node.max_imbalance:g} A",
                flat.node.id,
                high,
            )
        )
    return out
