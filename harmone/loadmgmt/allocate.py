"""Share a site's current between the connectors that are charging, never exceeding a fuse.

`allocate` is pure: the same tree, demands, readings, time and policy give the same allocation.

How it works (see docs/load-management.md for the guarantees):

1. The tree is flattened. Each node gets its effective limit (fuse, dynamic limit, safety current
   when its meter is failed, stale or missing) and its non-charger load. Connectors that cannot
   be controlled (idle ones, chargers that ignore their profile) become fixed reservations.
2. Every line of every node becomes rows ``sum(coefficient * grant) <= slack``: one row with
   coefficient 1 per connector when all its loads point the same way, or one row per sector of
   the phasor arc when L-L loads or a transformer make them differ (`phasors.py`). A node with a
   max imbalance adds one row per ordered pair of phases (``load[p] - load[q] <= D``).
3. Policies order connectors into tiers (one tier for equal share, one per priority, one per
   car for first come first served). Per tier: *admit* in turn order (`turns.py`), each at its
   min current if that fits (else it stays paused at 0 A); *fill* cars with a deadline up to the
   current that finishes them in time; *fill* by progressive filling (water-filling) up to each
   car's need; *top up* leftover steps round robin.
4. *Settle*: pass over all connectors until no connector can be raised by one step nor a paused
   one started at its min: the allocation is then work-conserving up to the step.

All arithmetic is in integer milliamps (rows scaled by `problem.SCALE`). Limits are rounded
down and loads and coefficients up, so the integer solution is never less safe than the input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from harmone.errors import ConfigError
from harmone.loadmgmt.explain import result
from harmone.loadmgmt.model import (
    DEFAULT_OPTIONS,
    Allocation,
    AllocationOptions,
    ChargerSpec,
    Demand,
    Limitation,
    LimitKind,
    LimitSource,
    Measurement,
    MeterState,
    Node,
    Policy,
    Wiring,
)
from harmone.loadmgmt.phasors import LineItem, charger_lines, sectors, through_delta
from harmone.loadmgmt.problem import PAIRS, SCALE, Conn, FlatNode, Row, ma_down, ma_up
from harmone.loadmgmt.solver import Solver
from harmone.loadmgmt.turns import admission_order, deadline_caps, least_laxity_first, protected

__all__ = ["allocate"]


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
    rows, slack, items = _constraints(nodes, conns)
    solver = Solver(slack, conns, step)
    tiers = _tiers([c for c in range(len(conns)) if conns[c].need > 0], conns, policy)
    order: list[int] = []
    for tier in tiers:
        turn = admission_order(tier, conns, now, options) if len(tier) > 1 else tier
        order.extend(turn)
        caps = deadline_caps(turn, conns, now, options, step)
        if caps:
            # Cars with a deadline: those protected by their turn keep running; then, least
            # laxity first, each is started and given what finishes it in time; then as much
            # as it takes. Cars without a deadline share what is left.
            solver.admit([c for c in turn if c in caps and protected(conns[c], now, options)])
            urgent = least_laxity_first([c for c in turn if c in caps], conns, now)
            for c in urgent:
                solver.admit([c])
                solver.raise_to([c], caps)
            solver.raise_to(urgent, {})
        admitted = solver.admit(turn)
        offsets = _head_starts(admitted, conns, options, step)
        solver.fill(admitted, offsets=offsets)
        if len(admitted) > 1:
            # What filling left goes a step at a time: with head starts, to the cars that took
            # most first (the smallest offset), so that a step never reverses their order.
            ahead = admitted if offsets is None else sorted(admitted, key=offsets.__getitem__)
            solver.round_robin(ahead)
        solver.settle(admitted)
    solver.settle(order)
    return result(nodes, conns, rows, items, solver, now, policy)


# --- building the problem -----------------------------------------------------------------------


def _flatten(tree: Node) -> tuple[list[FlatNode], list[Conn]]:
    nodes: list[FlatNode] = []
    conns: list[Conn] = []
    stack: list[tuple[Node | ChargerSpec, tuple[int, ...]]] = [(tree, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, Node):
            nodes.append(FlatNode(item, path[-1] if path else -1))
            here = (*path, len(nodes) - 1)
            stack.extend((child, here) for child in reversed(item.children))
        else:
            conns.extend(Conn(item, cid, path) for cid in item.connector_ids)
    return nodes, conns


def _apply_measurements(
    nodes: list[FlatNode],
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
        ratio = node.delta_wye_ratio
        if ratio is not None:
            # Primary line p carries (secondary p - secondary p-1) / ratio; building loads of
            # unknown angle are bounded by the sum of the two.
            nc = [math.ceil((nc[p] + nc[p - 1]) / ratio) for p in range(3)]
        if flat.meter is MeterState.OK and reading is not None:
            # The meter sees its sub-clusters' load too; if it reads less than they do (the
            # readings were not taken at the same instant), believe the larger.
            nc = [max(n, ma_up(max(0.0, amps))) for n, amps in zip(nc, reading.load, strict=True)]
        flat.nc = nc
        if flat.parent >= 0:
            # Above a node whose meter is not working, its building load is unknown but
            # bounded: its chargers get at most its safety current, and the whole subtree can
            # never draw more than its fuse. So the parent counts the rest of the fuse as
            # building load; counting 0 would hand that load's share to other chargers.
            passed = nc
            if flat.meter in (MeterState.FAILED, MeterState.STALE, MeterState.MISSING):
                bound = ma_up(max(0.0, node.max_current - node.safety_current))
                passed = [max(n, bound) for n in nc]
            up = children_nc[flat.parent]
            for p in range(3):
                up[p] += passed[p]
        candidates = [(ma_down(node.max_current), LimitSource.CONFIGURED)]
        if node.dynamic_limit is not None:
            candidates.append((ma_down(node.dynamic_limit), LimitSource.DYNAMIC))
        if flat.meter in (MeterState.FAILED, MeterState.STALE, MeterState.MISSING):
            candidates.append((ma_down(node.safety_current), LimitSource.SAFETY))
        flat.limit, flat.source = min(candidates, key=lambda c: c[0])


def _attach_demands(conns: list[Conn], demands: Iterable[Demand]) -> None:
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
    conn: Conn, nodes: list[FlatNode], now: datetime, options: AllocationOptions, step: int
) -> None:
    """Decide whether `conn` is reserved or granted, which grid phases it loads, and its need."""
    charger = conn.charger
    grid = [p.index for p in charger.grid_phases]
    d = conn.demand
    draw = _fresh_draw(d, now, options) if d is not None else None
    if draw is not None and charger.wiring is Wiring.LL:
        # Its one current flows out on one line and back on the other.
        draw = (draw[0], draw[0])
    if d is None or charger.ignores_profile:
        # Idle connectors may start drawing their TxDefault limit (or, ignoring profiles, their
        # max) before the next allocation; charging ones that ignore profiles draw what they draw.
        fixed = [0, 0, 0]
        if d is not None and draw is not None:
            for i, amps in zip(grid, draw, strict=True):
                fixed[i] = ma_up(amps)
        else:
            amps = charger.max_current if charger.ignores_profile else charger.tx_default_limit
            for i in grid:
                fixed[i] = ma_up(amps)
        conn.fixed = fixed
        conn.phases = tuple(sorted(i for i in grid if fixed[i] > 0)) or tuple(sorted(grid))
        conn.lines = charger_lines(charger, conn.phases)
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
    conn.lines = charger_lines(charger, conn.phases)

    smallest = max(step, -(-ma_up(charger.min_current) // step) * step)
    largest = ma_down(charger.max_current) // step * step
    conn.smallest = smallest
    if largest < smallest:
        conn.info.append(
            Limitation(LimitKind.NOT_GRANTABLE, "no grantable current between its min and max")
        )
        return
    need = largest
    if d.car_max is not None:
        car = ma_down(d.car_max) // step * step
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
            estimate = -(-ma_up(drawn + options.give_back_margin) // step) * step
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


def _constraints(
    nodes: list[FlatNode], conns: list[Conn]
) -> tuple[list[Row], list[int], list[list[list[LineItem]]]]:
    """The rows, their initial slack, and the loads on each node's lines; fills `conn.terms`."""
    items: list[list[list[LineItem]]] = [[[], [], []] for _ in nodes]
    for c, conn in enumerate(conns):
        if conn.fixed is not None:
            fixed = conn.fixed
            loads = [(-1, p, float(fixed[p]), angle) for p, angle in conn.lines if fixed[p] > 0]
        elif conn.need > 0:
            loads = [(c, p, 1.0, angle) for p, angle in conn.lines]
        else:
            continue
        for i in reversed(conn.path):
            ratio = nodes[i].node.delta_wye_ratio
            if ratio is not None:
                loads = through_delta(loads, ratio)
            here = items[i]
            for owner, p, size, angle in loads:
                here[p].append(LineItem(owner, size, angle))  # a tuple: cheap
    rows: list[Row] = []
    slack: list[int] = []
    for i, flat in enumerate(nodes):
        for p in range(3):
            for sector in sectors(items[i][p]):
                flat.line_rows[p].append(len(rows))
                for owner, a in sector.coefficients.items():
                    conns[owner].terms.append((len(rows), a))
                rows.append(Row(i, p))
                slack.append((flat.limit - flat.nc[p]) * SCALE - sector.fixed)
        if flat.node.max_imbalance is not None:
            flat.imbalance_base = len(slack)
            bound = ma_down(flat.node.max_imbalance)
            for p, q in PAIRS:
                rows.append(Row(i, -1, (p, q)))
                slack.append((bound - (flat.fixed[p] - flat.fixed[q])) * SCALE)
    for conn in conns:
        if conn.fixed is not None or conn.need == 0:
            continue
        loads_on = set(conn.phases)
        for i in conn.path:
            base = nodes[i].imbalance_base
            if base >= 0:
                for j, (p, q) in enumerate(PAIRS):
                    if p in loads_on and q not in loads_on:
                        conn.terms.append((base + j, SCALE))
                    elif q in loads_on and p not in loads_on:
                        conn.terms.append((base + j, -SCALE))
    return rows, slack, items


def _head_starts(
    members: list[int], conns: list[Conn], options: AllocationOptions, step: int
) -> dict[int, int] | None:
    """Each car's head start in filling (mA, a multiple of the step; `fill` takes offsets, so
    a head start is the offset of the cars below it): what it took more than the car that
    took most, spread over `options.continuity_horizon`, as a deficit of the others."""
    horizon = options.continuity_horizon
    if horizon is None or len(members) < 2:
        return None
    hours = horizon.total_seconds() / 3600
    amps: dict[int, float] = {}
    for c in members:
        conn = conns[c]
        assert conn.demand is not None  # only charging connectors are filled
        watts = conn.charger.watts_per_amp(len(conn.phases)) * hours
        amps[c] = conn.demand.energy_delivered / watts
    most = max(amps.values())
    return {c: int((most - a) * 1000) // step * step for c, a in amps.items()}


def _tiers(controllable: list[int], conns: list[Conn], policy: Policy) -> list[list[int]]:
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
