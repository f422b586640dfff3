"""The allocator's result: grants, node loads, and the reasons a car got less than it wanted.

Internal to `allocate`.
"""

from __future__ import annotations

from datetime import datetime

from harmone.loadmgmt.model import (
    Allocation,
    ConnectorGrant,
    Limitation,
    LimitKind,
    NodeLoad,
    Policy,
)
from harmone.loadmgmt.phasors import LineItem, magnitude
from harmone.loadmgmt.problem import PHASES, SCALE, Conn, FlatNode, Row, amps, triple
from harmone.loadmgmt.solver import Solver

__all__ = ["result"]


def result(
    nodes: list[FlatNode],
    conns: list[Conn],
    rows: list[Row],
    items: list[list[list[LineItem]]],
    solver: Solver,
    now: datetime,
    policy: Policy,
) -> Allocation:
    """`items[i][p]`: the loads on line p of node i, as the rows of that line were built."""
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
        grants.append(_grant(conn, c, per_phase, nodes, rows, solver, why))
    loads = []
    for i, flat in enumerate(nodes):
        line = [
            magnitude(
                (it.size if it.owner < 0 else it.size * solver.grant[it.owner], it.angle)
                for it in items[i][p]
            )
            for p in range(3)
        ]
        total = [flat.nc[p] + line[p] for p in range(3)]
        attributed = flat.charger_load
        loads.append(
            NodeLoad(
                node_id=flat.node.id,
                limit=amps(flat.limit),
                limit_source=flat.source,
                meter=flat.meter,
                non_charger_load=triple(flat.nc),
                charger_load=triple(line),
                load=triple(total),
                headroom=triple([_free(flat, p, solver) for p in range(3)]),
                imbalance=amps(max(attributed) - min(attributed)),
            )
        )
    return Allocation(at=now, policy=policy, connectors=tuple(grants), nodes=tuple(loads))


def _free(flat: FlatNode, p: int, solver: Solver) -> int:
    """What the model leaves on line p (mA): the tightest of the line's rows."""
    return min(solver.slack[k] for k in flat.line_rows[p]) // SCALE


def _grant(
    conn: Conn,
    c: int,
    per_phase: list[int],
    nodes: list[FlatNode],
    rows: list[Row],
    solver: Solver,
    why: dict[tuple[int, ...], list[Limitation]],
) -> ConnectorGrant:
    g = solver.grant[c]
    reasons = list(conn.info)
    if conn.fixed is None and conn.need > 0 and g < conn.need:
        wanted = solver.step if g > 0 else conn.smallest
        slack = solver.slack
        tight = tuple(k for k, a in conn.terms if a > 0 and slack[k] < a * wanted)
        # The paused reason depends on the min current, so it is part of the key.
        key = (-conn.smallest, *tight) if g == 0 else tight
        if key not in why:
            why[key] = _why(list(tight), nodes, rows, solver)
            if g == 0:
                why[key].insert(
                    0,
                    Limitation(
                        LimitKind.PAUSED_BELOW_MIN,
                        f"paused: its min current {amps(conn.smallest):g} A does not fit",
                    ),
                )
        reasons.extend(why[key])
    if conn.fixed is not None:
        limit = amps(max(conn.fixed))
        need = limit
    else:
        limit = amps(g)
        need = amps(conn.need)
    return ConnectorGrant(
        charger_id=conn.charger.id,
        connector_id=conn.connector_id,
        charging=conn.demand is not None,
        reserved=conn.fixed is not None,
        limit_to_send=limit,
        per_phase=triple(per_phase),
        phases=tuple(PHASES[p] for p in conn.phases),
        need=need,
        reasons=tuple(reasons),
    )


def _why(
    tight: list[int], nodes: list[FlatNode], rows: list[Row], solver: Solver
) -> list[Limitation]:
    """Describe the rows in `tight` for a person, one reason per node and kind."""
    fuses: dict[int, list[int]] = {}
    pairs: dict[int, list[tuple[int, int]]] = {}
    for k in tight:
        row = rows[k]
        if row.pair is None:
            found = fuses.setdefault(row.node, [])
            if row.line not in found:
                found.append(row.line)
        else:
            pairs.setdefault(row.node, []).append(row.pair)
    out = []
    for i, phases in fuses.items():
        flat = nodes[i]
        node_id = flat.node.id
        phases.sort()
        on = tuple(PHASES[p] for p in phases)
        names = ", ".join(p.name for p in on)
        if flat.limit == 0:
            kind = LimitKind.SUSPENDED
            text = f"suspended: node {node_id!r} has a {flat.source} limit of 0 A"
        else:
            kind = LimitKind.NODE_LIMIT
            free = ", ".join(f"{amps(_free(flat, p, solver)):g}" for p in phases)
            text = (
                f"limited by node {node_id!r} on {names} "
                f"({flat.source} limit {amps(flat.limit):g} A, free: {free} A)"
            )
        out.append(Limitation(kind, text, node_id, on))
    for i, found_pairs in pairs.items():
        flat = nodes[i]
        high = tuple(PHASES[p] for p in sorted({p for p, _ in found_pairs}))
        low = sorted({PHASES[q].name for _, q in found_pairs})
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
