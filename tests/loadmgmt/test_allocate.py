"""Load allocation: worked examples, then properties over random sites.

The properties check the allocation against an oracle written from the specification (effective
limits, non-charger load, reservations), not against the allocator's own bookkeeping.
Run deeper with HYPOTHESIS_PROFILE=long.
"""

from __future__ import annotations

import cmath
import itertools
import math
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harmone.errors import ConfigError
from harmone.loadmgmt import (
    Allocation,
    AllocationOptions,
    ChargerSpec,
    Demand,
    LimitKind,
    LimitSource,
    Measurement,
    MeterState,
    Node,
    Phase,
    Policy,
    Wiring,
    allocate,
    amps_to_watts,
    watts_to_amps,
)

L1, L2, L3 = Phase.L1, Phase.L2, Phase.L3
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
#: Amps the float view of the allocator's integer milliamps may differ by.
TOL = 0.002

settings.register_profile(
    "long", max_examples=5_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
_LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"


def _examples(fast: int) -> int:
    """`fast` examples normally; the long profile's count with HYPOTHESIS_PROFILE=long."""
    profile = settings.get_profile("long")
    return profile.max_examples if _LONG else fast


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def C(cid: str, max_current: float = 32, **kw: object) -> ChargerSpec:
    return ChargerSpec(cid, max_current, **kw)  # type: ignore[arg-type]


def car(
    charger: str,
    arrived_min_ago: float = 10,
    connector: int = 1,
    **kw: object,
) -> Demand:
    return Demand(charger, connector, ago(arrived_min_ago * 60), **kw)  # type: ignore[arg-type]


# --- worked examples ----------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    tree: Node
    demands: list[Demand]
    expect: dict[str, float]  # "charger" or "charger#connector" -> limit to send
    measurements: list[Measurement] = field(default_factory=list)
    policy: Policy = Policy.EQUAL_SHARE
    reasons: dict[str, set[LimitKind]] = field(default_factory=dict)
    per_phase: dict[str, tuple[float, float, float]] = field(default_factory=dict)


def _key(name: str) -> tuple[str, int]:
    charger, _, connector = name.partition("#")
    return charger, int(connector or 1)


CASES = [
    Case(
        "equal share on one node",
        Node("site", 30, children=(C("a"), C("b"), C("c"))),
        [car("a", 3), car("b", 2), car("c", 1)],
        {"a": 10, "b": 10, "c": 10},
        reasons={"a": {LimitKind.NODE_LIMIT}},
    ),
    Case(
        "a sub-cluster fuse binds below a roomy grid connection",
        Node("site", 63, children=(Node("garage", 20, children=(C("a"), C("b"))), C("c", 32))),
        [car("a"), car("b"), car("c")],
        {"a": 10, "b": 10, "c": 32},
        reasons={"a": {LimitKind.NODE_LIMIT}, "c": set()},
    ),
    Case(
        "1-phase car on a 3-phase charger loads only L1 and leaves L2, L3 to others",
        Node(
            "site",
            16,
            children=(
                C("a"),
                C("b", phases=1, phase_rotation=(L2,)),
                C("c", phases=1, phase_rotation=(L3,)),
            ),
        ),
        [
            car("a", measured=(10, 0, 0), measured_at=ago(10)),
            car("b"),
            car("c"),
        ],
        {"a": 16, "b": 16, "c": 16},
        per_phase={"a": (16, 0, 0), "b": (0, 16, 0), "c": (0, 0, 16)},
    ),
    Case(
        "without a reading that car is counted on all three phases",
        Node(
            "site",
            16,
            children=(
                C("a"),
                C("b", phases=1, phase_rotation=(L2,)),
                C("c", phases=1, phase_rotation=(L3,)),
            ),
        ),
        [car("a"), car("b"), car("c")],
        {"a": 8, "b": 8, "c": 8},
        per_phase={"a": (8, 8, 8)},
    ),
    Case(
        "phase rotation: a charger wired L2-L3-L1 puts a 1-phase car on grid L2",
        Node(
            "site",
            20,
            children=(
                C("a", phase_rotation=(L2, L3, L1)),
                C("b", phases=1, phase_rotation=(L2,)),
            ),
        ),
        [car("a", measured=(12, 0, 0), measured_at=ago(5)), car("b")],
        {"a": 10, "b": 10},
        per_phase={"a": (0, 10, 0), "b": (0, 10, 0)},
    ),
    Case(
        "priority: the higher one is served completely first",
        Node("site", 40, children=(C("hi", priority=1), C("lo1"), C("lo2"))),
        [car("lo1", 30), car("lo2", 20), car("hi", 10)],
        {"hi": 32, "lo1": 8, "lo2": 0},
        policy=Policy.PRIORITY,
        reasons={"lo2": {LimitKind.PAUSED_BELOW_MIN, LimitKind.NODE_LIMIT}},
    ),
    Case(
        "priority: equal priorities share equally",
        Node(
            "site",
            40,
            children=(C("hi1", 16, priority=1), C("hi2", 16, priority=1), C("lo")),
        ),
        [car("lo", 30), car("hi1", 20), car("hi2", 10)],
        {"hi1": 16, "hi2": 16, "lo": 8},
        policy=Policy.PRIORITY,
    ),
    Case(
        "first come first served",
        Node("site", 40, children=(C("a"), C("b"), C("c"))),
        [car("c", 1), car("a", 3), car("b", 2)],
        {"a": 32, "b": 8, "c": 0},
        policy=Policy.FIRST_COME_FIRST_SERVED,
        reasons={"c": {LimitKind.PAUSED_BELOW_MIN, LimitKind.NODE_LIMIT}},
    ),
    Case(
        "min current: the latest car is paused rather than granted 5.3 A",
        Node("site", 16, children=(C("a"), C("b"), C("c"))),
        [car("a", 3), car("b", 2), car("c", 1)],
        {"a": 8, "b": 8, "c": 0},
        reasons={"c": {LimitKind.PAUSED_BELOW_MIN, LimitKind.NODE_LIMIT}},
    ),
    Case(
        "a car drawing well below its grant gives the rest back",
        Node("site", 32, children=(C("a"), C("b"))),
        [
            car(
                "a",
                measured=(5, 5, 5),
                measured_at=ago(5),
                limit_in_force=16,
                limit_since=ago(600),
            ),
            car("b"),
        ],
        {"a": 8, "b": 24},
        reasons={"a": {LimitKind.CAR_DRAW}},
    ),
    Case(
        "a reading taken before the car settled on its limit is not trusted",
        Node("site", 32, children=(C("a"), C("b"))),
        [
            car(
                "a",
                measured=(5, 5, 5),
                measured_at=ago(5),
                limit_in_force=16,
                limit_since=ago(30),
            ),
            car("b"),
        ],
        {"a": 16, "b": 16},
    ),
    Case(
        "a car that takes at most 10 A leaves the rest",
        Node("site", 32, children=(C("a"), C("b"))),
        [car("a", car_max=10), car("b")],
        {"a": 10, "b": 22},
        reasons={"a": {LimitKind.CAR_MAX}},
    ),
    Case(
        "failed meter: the cluster falls to its safety current",
        Node(
            "site",
            63,
            children=(
                Node("cluster", 32, safety_current=10, metered=True, children=(C("a"), C("b"))),
            ),
        ),
        [car("a", 2), car("b", 1)],
        {"a": 10, "b": 0},
        measurements=[Measurement("cluster", (1, 1, 1), NOW, failed=True)],
        reasons={"b": {LimitKind.PAUSED_BELOW_MIN, LimitKind.NODE_LIMIT}},
    ),
    Case(
        "a stale reading counts as a failed meter",
        Node("site", 32, safety_current=10, metered=True, children=(C("a"),)),
        [car("a")],
        {"a": 10},
        measurements=[Measurement("site", (0, 0, 0), ago(3600))],
    ),
    Case(
        "a metered node without a reading falls to its safety current (0 A by default)",
        Node("site", 32, metered=True, children=(C("a"),)),
        [car("a")],
        {"a": 0},
        reasons={"a": {LimitKind.PAUSED_BELOW_MIN, LimitKind.SUSPENDED}},
    ),
    Case(
        "building load reduces what chargers may use, on each phase",
        Node(
            "site",
            32,
            metered=True,
            children=(C("a"), C("b", phases=1, phase_rotation=(L3,))),
        ),
        [car("a"), car("b")],
        {"a": 16, "b": 16},
        measurements=[Measurement("site", (16, 10, -5), ago(1))],
    ),
    Case(
        "a sub-cluster's building load also loads its unmetered parent",
        Node(
            "site",
            32,
            children=(Node("cluster", 32, metered=True, children=(C("a"),)), C("b")),
        ),
        [car("a"), car("b")],
        {"a": 6, "b": 6},
        measurements=[Measurement("cluster", (20, 20, 20), ago(1))],
    ),
    Case(
        "dynamic limit 0 suspends all charging below",
        Node("site", 63, children=(Node("cluster", 32, dynamic_limit=0, children=(C("a"),)),)),
        [car("a")],
        {"a": 0},
        reasons={"a": {LimitKind.PAUSED_BELOW_MIN, LimitKind.SUSPENDED}},
    ),
    Case(
        "a dynamic limit below the fuse is in force",
        Node("site", 32, dynamic_limit=20, children=(C("a"), C("b"))),
        [car("a"), car("b")],
        {"a": 10, "b": 10},
    ),
    Case(
        "a charger that ignores its profile is counted at its measured draw",
        Node("site", 32, children=(C("x", ignores_profile=True), C("a"))),
        [car("x", measured=(10, 10, 9), measured_at=ago(10)), car("a")],
        {"x": 10, "a": 22},
        per_phase={"x": (10, 10, 9)},
        reasons={"x": {LimitKind.IGNORES_PROFILE}},
    ),
    Case(
        "a charger that ignores its profile, without a reading, is counted at its max",
        Node("site", 32, children=(C("x", 16, ignores_profile=True), C("a"))),
        [car("x"), car("a")],
        {"x": 16, "a": 16},
    ),
    Case(
        "an idle connector reserves its TxDefault limit",
        Node("site", 32, children=(C("a", tx_default_limit=6, connector_ids=(1, 2)), C("b"))),
        [car("b")],
        {"a": 6, "a#2": 6, "b": 20},
    ),
    Case(
        "imbalance limit: a lone 1-phase car may only load its phase 10 A above the others",
        Node("site", 32, max_imbalance=10, children=(C("a", phases=1),)),
        [car("a")],
        {"a": 10},
        reasons={"a": {LimitKind.IMBALANCE}},
    ),
    Case(
        "imbalance limit: a car paused for balance starts once the other phases catch up",
        Node(
            "site",
            63,
            max_imbalance=8,
            children=(
                C("a", 10, phases=1),
                C("c", 10, phases=1),
                C("b", 10, phases=1, phase_rotation=(L2,)),
                C("d", 10, phases=1, phase_rotation=(L3,)),
            ),
        ),
        # c (on L1 like a) is admitted after a: 12 A on L1 against 0 on L2/L3 breaks the limit
        # until b and d (later arrivals) load L2 and L3.
        [car("a", 4), car("c", 3), car("b", 2), car("d", 1)],
        {"a": 10, "c": 8, "b": 10, "d": 10},
        reasons={"c": {LimitKind.IMBALANCE}},
    ),
    Case(
        "imbalance limit: a 3-phase car still gets what the fuse leaves",
        Node("site", 32, max_imbalance=10, children=(C("a", phases=1), C("b"))),
        [car("a"), car("b")],
        {"a": 10, "b": 22},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_examples(case: Case) -> None:
    alloc = allocate(case.tree, case.demands, case.measurements, NOW, case.policy)
    got = {f"{g.charger_id}#{g.connector_id}": g.limit_to_send for g in alloc.connectors}
    for name, amps in case.expect.items():
        assert got[f"{_key(name)[0]}#{_key(name)[1]}"] == pytest.approx(amps), name
    for name, kinds in case.reasons.items():
        grant = alloc.connector(*_key(name))
        assert {r.kind for r in grant.reasons} == kinds, [str(r) for r in grant.reasons]
    for name, vector in case.per_phase.items():
        assert alloc.connector(*_key(name)).per_phase == pytest.approx(vector), name
    _check_invariants(case.tree, case.demands, case.measurements, alloc, AllocationOptions())


def test_node_results_explain_the_limit() -> None:
    tree = Node(
        "site",
        63,
        children=(Node("cluster", 32, safety_current=10, metered=True, children=(C("a"),)),),
    )
    alloc = allocate(tree, [car("a")], [Measurement("cluster", (5, 5, 5), NOW, failed=True)], NOW)
    cluster = alloc.node("cluster")
    assert cluster.limit == 10
    assert cluster.limit_source is LimitSource.SAFETY
    assert cluster.meter is MeterState.FAILED
    assert cluster.non_charger_load == (0, 0, 0)  # unknown while failed: the safety current is all
    assert cluster.load == (10, 10, 10)
    assert cluster.headroom == (0, 0, 0)
    site = alloc.node("site")
    assert site.limit_source is LimitSource.CONFIGURED
    # Above the failed meter, the cluster's unknown building load is counted as the rest of its
    # fuse (32 - 10 A): 63 - 22 - 10 = 31 A are left at the site, not 53.
    assert site.headroom == (31, 31, 31)
    [reason] = alloc.connector("a", 1).reasons
    assert str(reason) == (
        "limited by node 'cluster' on L1, L2, L3 (safety limit 10 A, free: 0, 0, 0 A)"
    )
    assert (reason.node_id, reason.phases) == ("cluster", (L1, L2, L3))


def test_equal_share_splits_leftover_steps_round_robin() -> None:
    tree = Node("site", 20, children=(C("a"), C("b"), C("c")))
    alloc = allocate(tree, [car("a", 3), car("b", 2), car("c", 1)], [], NOW)
    assert [g.limit_to_send for g in alloc.connectors] == [6.7, 6.7, 6.6]


def test_whole_amp_steps() -> None:
    tree = Node("site", 20, children=(C("a"), C("b"), C("c")))
    options = AllocationOptions(step=1.0)
    alloc = allocate(tree, [car("a", 3), car("b", 2), car("c", 1)], [], NOW, options=options)
    assert [g.limit_to_send for g in alloc.connectors] == [7, 7, 6]


def test_a_capped_car_that_draws_its_cap_again_is_uncapped() -> None:
    tree = Node("site", 32, children=(C("a"), C("b")))
    drawing_its_cap = car(
        "a", measured=(8, 8, 8), measured_at=ago(5), limit_in_force=8, limit_since=ago(600)
    )
    alloc = allocate(tree, [drawing_its_cap, car("b")], [], NOW)
    assert alloc.connector("a", 1).limit_to_send == 16
    assert alloc.connector("a", 1).need == 32


def test_give_back_uses_only_the_phases_in_use() -> None:
    tree = Node("site", 32, children=(C("a"), C("b")))
    one_phase = car(
        "a", measured=(4, 0, 0), measured_at=ago(5), limit_in_force=16, limit_since=ago(600)
    )
    alloc = allocate(tree, [one_phase, car("b")], [], NOW)
    a = alloc.connector("a", 1)
    assert (a.limit_to_send, a.phases, a.per_phase) == (7, (L1,), (7, 0, 0))
    assert alloc.connector("b", 1).limit_to_send == 25


def test_suspended_cluster_keeps_idle_reservations_and_reports_overload() -> None:
    tree = Node("site", 32, dynamic_limit=0, children=(C("a", tx_default_limit=6),))
    alloc = allocate(tree, [], [], NOW)
    site = alloc.node("site")
    assert site.limit_source is LimitSource.DYNAMIC
    assert site.headroom == (-6, -6, -6)


def test_input_order_does_not_matter() -> None:
    tree = Node(
        "site",
        40,
        metered=True,
        children=(Node("c1", 20, children=(C("a"), C("b"))), C("c", phases=1)),
    )
    demands = [car("a", 3), car("b", 3), car("c", 1)]
    readings = [Measurement("site", (3, 2, 1), NOW)]
    first = allocate(tree, demands, readings, NOW)
    assert allocate(tree, list(reversed(demands)), readings, NOW) == first


def test_amps_and_watts() -> None:
    assert amps_to_watts(16, 3) == 11_040
    assert amps_to_watts(16, 1, voltage=240) == 3_840
    assert watts_to_amps(11_040, 3) == pytest.approx(16)
    with pytest.raises(ConfigError):
        amps_to_watts(16, 4)
    with pytest.raises(ConfigError):
        amps_to_watts(-1, 3)
    with pytest.raises(ConfigError):
        watts_to_amps(1000, 1, voltage=0)


BAD_INPUT = {
    "negative max current": lambda: C("a", -1),
    "min above max": lambda: C("a", 16, min_current=20),
    "two-phase charger": lambda: C("a", 16, phases=2),
    "rotation of the wrong length": lambda: C("a", 16, phases=1, phase_rotation=(L1, L2)),
    "rotation repeating a phase": lambda: C("a", 16, phase_rotation=(L1, L1, L2)),
    "rotation with a non-phase": lambda: C("a", 16, phases=1, phase_rotation=("L1",)),
    "duplicate connector ids": lambda: C("a", 16, connector_ids=(1, 1)),
    "connector id 0": lambda: C("a", 16, connector_ids=(0,)),
    "TxDefault above max": lambda: C("a", 16, tx_default_limit=20),
    "duplicate ids in the tree": lambda: Node(
        "site", 32, children=(C("a"), Node("x", 10, children=(C("a"),)))
    ),
    "node and charger sharing an id": lambda: Node("site", 32, children=(C("site"),)),
    "safety current above the fuse": lambda: Node("site", 10, safety_current=20),
    "NaN fuse": lambda: Node("site", math.nan),
    "negative dynamic limit": lambda: Node("site", 10, dynamic_limit=-1),
    "boolean current": lambda: Node("site", True),
    "naive datetime": lambda: Demand("a", 1, datetime(2025, 1, 1)),
    "reading without a time": lambda: Demand("a", 1, NOW, measured=(1, 1, 1)),
    "negative draw": lambda: Demand("a", 1, NOW, measured=(-1,), measured_at=NOW),
    "limit without its time": lambda: Demand("a", 1, NOW, limit_in_force=16),
    "meter reading of two phases": lambda: Measurement("site", (1, 2), NOW),  # type: ignore[arg-type]
    "margin not above the give-back threshold": lambda: AllocationOptions(
        give_back_below=3, give_back_margin=2
    ),
    "zero step": lambda: AllocationOptions(step=0),
    "demand for an unknown charger": lambda: allocate(Node("s", 9), [car("zz")], [], NOW),
    "demand for an unknown connector": lambda: allocate(
        Node("s", 9, children=(C("a"),)), [car("a", connector=2)], [], NOW
    ),
    "two demands for one connector": lambda: allocate(
        Node("s", 9, children=(C("a"),)), [car("a"), car("a")], [], NOW
    ),
    "reading of an unknown node": lambda: allocate(
        Node("s", 9), [], [Measurement("x", (0, 0, 0), NOW)], NOW
    ),
    "two readings of one node": lambda: allocate(
        Node("s", 9), [], [Measurement("s", (0, 0, 0), NOW)] * 2, NOW
    ),
    "draw with the wrong number of phases": lambda: allocate(
        Node("s", 9, children=(C("a"),)), [car("a", measured=(1,), measured_at=NOW)], [], NOW
    ),
    "naive now": lambda: allocate(Node("s", 9), [], [], datetime(2025, 1, 1)),
}


@pytest.mark.parametrize("build", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_refused(build: object) -> None:
    with pytest.raises(ConfigError):
        build()  # type: ignore[operator]


def _big_site(connectors: int) -> tuple[Node, list[Demand]]:
    rng = random.Random(7)
    clusters = []
    demands = []
    per_cluster = 50
    for n in range(connectors // (2 * per_cluster)):
        chargers = []
        for i in range(per_cluster):
            cid = f"cp{n}-{i}"
            if i % 3 == 0:
                rotation = (rng.choice((L1, L2, L3)),)
                chargers.append(C(cid, 32, phases=1, phase_rotation=rotation, connector_ids=(1, 2)))
            else:
                chargers.append(C(cid, 16, connector_ids=(1, 2), priority=i % 2))
            for connector in (1, 2):
                measured = None
                if rng.random() < 0.5:
                    measured = (rng.uniform(0, 16),) * (1 if i % 3 == 0 else 3)
                demands.append(
                    car(
                        cid,
                        rng.uniform(0, 300),
                        connector,
                        measured=measured,
                        measured_at=ago(10) if measured else None,
                        limit_in_force=16 if measured else None,
                        limit_since=ago(600) if measured else None,
                    )
                )
        clusters.append(Node(f"cluster{n}", 250, max_imbalance=20, children=tuple(chargers)))
    return Node("site", 1_000, metered=True, children=tuple(clusters)), demands


@pytest.mark.parametrize("policy", list(Policy))
def test_a_thousand_connectors_are_allocated_safely(policy: Policy) -> None:
    # How fast is measured by bench/loadmgmt_bench.py; here, that the answer holds.
    tree, demands = _big_site(1_000)
    readings = [Measurement("site", (120, 80, 100), NOW)]
    alloc = allocate(tree, demands, readings, NOW, policy)
    assert len(alloc.connectors) == 1_000
    _check_invariants(tree, demands, readings, alloc, AllocationOptions())


# --- the oracle ---------------------------------------------------------------------------------


def _nodes(tree: Node) -> list[Node]:
    return [item for item in tree.walk() if isinstance(item, Node)]


def _oracle_limits(
    tree: Node, measurements: list[Measurement], options: AllocationOptions
) -> dict[str, tuple[float, tuple[float, ...]]]:
    """Per node: (effective limit, non-charger load per phase), straight from the spec."""
    readings = {m.node_id: m for m in measurements}
    out: dict[str, tuple[float, tuple[float, ...]]] = {}

    def visit(node: Node) -> list[float]:
        below = [0.0, 0.0, 0.0]
        for child in node.children:
            if isinstance(child, Node):
                below = [a + b for a, b in zip(below, visit(child), strict=True)]
        if node.delta_wye_ratio is not None:
            # A primary line carries the difference of two secondary ones, of unknown angle.
            below = [(below[p] + below[p - 1]) / node.delta_wye_ratio for p in range(3)]
        m = readings.get(node.id)
        ok = m is not None and not m.failed and NOW - m.at <= options.meter_max_age
        nc = [max(b, x, 0.0) for b, x in zip(below, m.load, strict=True)] if ok and m else below
        limit = node.max_current
        if node.dynamic_limit is not None:
            limit = min(limit, node.dynamic_limit)
        if (m is not None or node.metered) and not ok:
            limit = min(limit, node.safety_current)
            out[node.id] = (limit, tuple(nc))
            # its parent cannot know its building load: it counts the rest of the fuse
            return [max(x, node.max_current - node.safety_current) for x in nc]
        out[node.id] = (limit, tuple(nc))
        return nc

    visit(tree)
    return out


def _fresh(d: Demand | None, options: AllocationOptions) -> tuple[float, ...] | None:
    if d is None or d.measured is None or d.measured_at is None:
        return None
    return d.measured if NOW - d.measured_at <= options.draw_max_age else None


def _expected_reservation(
    charger: ChargerSpec, d: Demand | None, options: AllocationOptions
) -> list[float]:
    out = [0.0, 0.0, 0.0]
    draw = _fresh(d, options)
    if draw is not None and charger.wiring is Wiring.LL:
        draw = (draw[0], draw[0])  # one current, out on one line and back on the other
    for i, phase in enumerate(charger.grid_phases):
        if d is None:
            out[phase.index] = (
                charger.max_current if charger.ignores_profile else charger.tx_default_limit
            )
        else:
            out[phase.index] = draw[i] if draw is not None else charger.max_current
    return out


def _smallest(charger: ChargerSpec, options: AllocationOptions) -> float:
    step = options.step
    return max(step, math.ceil(round(charger.min_current / step, 6)) * step)


def _check_invariants(
    tree: Node,
    demands: list[Demand],
    measurements: list[Measurement],
    alloc: Allocation,
    options: AllocationOptions,
) -> None:
    """All properties at once; the property tests below each also call their own check."""
    _check_counted_honestly(tree, demands, alloc, options)
    _check_limits(tree, measurements, alloc, options)
    _check_grant_range(tree, alloc, options)
    _check_work_conserving(tree, measurements, alloc, options)
    _check_imbalance(tree, alloc)


def _grants_by_key(alloc: Allocation) -> dict[tuple[str, int], object]:
    return {(g.charger_id, g.connector_id): g for g in alloc.connectors}


def _check_counted_honestly(
    tree: Node, demands: list[Demand], alloc: Allocation, options: AllocationOptions
) -> None:
    """Reservations match the spec; a grant is counted on every grid phase the car may load."""
    by_key = {d.key: d for d in demands}
    for charger in tree.chargers():
        grid = set(charger.grid_phases)
        for cid in charger.connector_ids:
            g = alloc.connector(charger.id, cid)
            d = by_key.get((charger.id, cid))
            assert g.charging == (d is not None)
            if d is None or charger.ignores_profile:
                assert g.reserved
                expected = _expected_reservation(charger, d, options)
                assert all(
                    got >= want - TOL for got, want in zip(g.per_phase, expected, strict=True)
                ), (charger, d, g)
                continue
            assert not g.reserved
            assert set(g.phases) <= grid
            for phase in (L1, L2, L3):
                want = g.limit_to_send if phase in g.phases else 0
                assert g.per_phase[phase.index] == want
            if set(g.phases) != grid:
                # Only a fresh reading showing the other phases idle may drop them; an L-L car
                # always loads both its lines.
                assert charger.wiring is not Wiring.LL
                draw = _fresh(d, options)
                assert draw is not None
                for i, phase in enumerate(charger.grid_phases):
                    in_use = draw[i] >= options.active_phase_threshold
                    assert in_use == (phase in g.phases)


def _node_loads(node: Node, alloc: Allocation) -> tuple[list[float], list[float]]:
    """(controllable grants, reserved) per phase below `node`, as attributed (an L-L grant counts
    on both its lines): what imbalance limits see."""
    granted = [0.0, 0.0, 0.0]
    reserved = [0.0, 0.0, 0.0]
    for charger in node.chargers():
        for cid in charger.connector_ids:
            g = alloc.connector(charger.id, cid)
            into = reserved if g.reserved else granted
            for p in range(3):
                into[p] += g.per_phase[p]
    return granted, reserved


# --- exact line currents ------------------------------------------------------------------------
#
# Written from the physics, not from the allocator: line Lp's voltage is e^{-i 120° p}; a load
# draws in phase with the voltage across it, so an L-L load between Lp and Lq draws along
# V_p - V_q, out on Lp and back on Lq; a delta-wye primary line p carries
# (secondary p - secondary p-1) / ratio.

_V = [cmath.exp(-2j * math.pi * p / 3) for p in range(3)]
#: The allocator's phasor rows over-count a line current by at most this factor.
_MODEL_LOSS = 1 / math.cos(math.radians(3.75))

Lines = list[complex]


def _per_amp(charger: ChargerSpec, phases: tuple[Phase, ...]) -> Lines:
    """The line currents of one amp through this charger (its grant on `phases`)."""
    out = [0j, 0j, 0j]
    if charger.wiring is Wiring.LL:
        a, b = (ph.index for ph in charger.grid_phases)
        along = (_V[a] - _V[b]) / abs(_V[a] - _V[b])
        out[a] += along
        out[b] -= along
    else:
        for ph in phases:
            out[ph.index] += _V[ph.index]
    return out


def _load_of(charger: ChargerSpec, g: object) -> Lines:
    """The line currents this connector makes: its grant, or its reservation."""
    assert hasattr(g, "per_phase")
    if g.reserved:  # type: ignore[attr-defined]
        per_phase = g.per_phase  # type: ignore[attr-defined]
        if charger.wiring is Wiring.LL:
            amps = max(per_phase)
            return [x * amps for x in _per_amp(charger, ())]
        return [_V[p] * per_phase[p] for p in range(3)]
    amps = g.limit_to_send  # type: ignore[attr-defined]
    return [x * amps for x in _per_amp(charger, g.phases)]  # type: ignore[attr-defined]


def _up_through(node: Node, lines: Lines) -> Lines:
    ratio = node.delta_wye_ratio
    if ratio is None:
        return lines
    return [(lines[p] - lines[p - 1]) / ratio for p in range(3)]


def _paths(tree: Node) -> dict[str, list[Node]]:
    """Per charger: its nodes, root first."""
    paths: dict[str, list[Node]] = {}

    def walk(node: Node, path: list[Node]) -> None:
        for child in node.children:
            if isinstance(child, Node):
                walk(child, [*path, child])
            else:
                paths[child.id] = path

    walk(tree, [tree])
    return paths


def _along(path: list[Node], lines: Lines) -> list[Lines]:
    """A connector's line currents as seen at each node of its `path` (root first)."""
    out: list[Lines] = []
    for node in reversed(path):
        lines = _up_through(node, lines)
        out.append(lines)
    return out[::-1]


def _line_currents(tree: Node, alloc: Allocation):  # type: ignore[no-untyped-def]
    """Per node id: (all loads, reserved loads only) as complex line currents, and for each
    line whether every load on it points the same way (then the allocator's sum is exact)."""
    paths = _paths(tree)
    totals: dict[str, tuple[Lines, Lines, list[set[float]]]] = {
        n.id: ([0j, 0j, 0j], [0j, 0j, 0j], [set(), set(), set()]) for n in _nodes(tree)
    }
    for charger in tree.chargers():
        path = paths[charger.id]
        for cid in charger.connector_ids:
            g = alloc.connector(charger.id, cid)
            load = _load_of(charger, g)
            wants = not g.reserved and g.need > 0
            units = _along(path, _per_amp(charger, g.phases)) if wants else None
            for n, (node, seen) in enumerate(zip(path, _along(path, load), strict=True)):
                total, fixed, directions = totals[node.id]
                for p in range(3):
                    total[p] += seen[p]
                    if g.reserved:
                        fixed[p] += seen[p]
                        if abs(seen[p]) > 1e-9:
                            directions[p].add(round(math.degrees(cmath.phase(seen[p])), 6))
                if units is not None:
                    per_amp = units[n]
                    for p in range(3):
                        if abs(per_amp[p]) > 1e-9:
                            directions[p].add(round(math.degrees(cmath.phase(per_amp[p])), 6))
    return totals


def _has_transformer(node: Node) -> bool:
    return any(isinstance(n, Node) and n.delta_wye_ratio is not None for n in node.walk())


def _check_limits(
    tree: Node, measurements: list[Measurement], alloc: Allocation, options: AllocationOptions
) -> None:
    """(1) The exact line current (phasor sum) plus building load <= the effective limit on
    every line of every node, unless fixed load alone exceeds it; then nothing controllable
    below that could raise it is granted anything on that line."""
    oracle = _oracle_limits(tree, measurements, options)
    currents = _line_currents(tree, alloc)
    for node in _nodes(tree):
        limit, nc = oracle[node.id]
        assert alloc.node(node.id).limit == pytest.approx(limit, abs=TOL)
        total, fixed, _ = currents[node.id]
        granted, _ = _node_loads(node, alloc)
        for p in range(3):
            assert alloc.node(node.id).charger_load[p] == pytest.approx(abs(total[p]), abs=TOL)
            if abs(total[p]) + nc[p] <= limit + TOL:
                continue
            # Overloaded by what cannot be controlled: the model's bound of the fixed load
            # alone is above the limit, and the grants did not make the line worse than that.
            assert abs(fixed[p]) * _MODEL_LOSS + nc[p] > limit - TOL, (node.id, p)
            assert abs(total[p]) <= abs(fixed[p]) * _MODEL_LOSS + TOL, (node.id, p)
            if not _has_transformer(node):
                # Below no transformer every load on a line raises it: none is granted.
                assert granted[p] == 0, (node.id, p, granted, nc, limit)


def _check_grant_range(tree: Node, alloc: Allocation, options: AllocationOptions) -> None:
    """(2) never strictly between 0 and min; (3) never above max (nor above the need)."""
    for charger in tree.chargers():
        for cid in charger.connector_ids:
            g = alloc.connector(charger.id, cid)
            if g.reserved:
                continue
            amps = g.limit_to_send
            assert amps == 0 or amps >= charger.min_current - TOL, (charger, g)
            assert amps <= charger.max_current + TOL
            assert amps <= g.need + TOL
            assert g.need <= charger.max_current + TOL
            assert g.need == 0 or g.need >= _smallest(charger, options) - TOL
            if not g.charging:
                assert amps == 0 or charger.ignores_profile or amps == charger.tx_default_limit


def _check_work_conserving(
    tree: Node, measurements: list[Measurement], alloc: Allocation, options: AllocationOptions
) -> None:
    """(4) a car that wants more is blocked: its next step (or its min) does not fit.

    "Does not fit" is exact on a line whose loads all point the same way (the allocator's row
    is the plain sum there); on a line with L-L loads or behind a transformer, the allocator's
    rows may over-count the exact current by `_MODEL_LOSS` and no more.
    """
    oracle = _oracle_limits(tree, measurements, options)
    paths = _paths(tree)
    before = _line_currents(tree, alloc)
    loads = {node.id: _node_loads(node, alloc) for node in _nodes(tree)}
    for charger in tree.chargers():
        for cid in charger.connector_ids:
            g = alloc.connector(charger.id, cid)
            if g.reserved or not g.charging or g.limit_to_send >= g.need - TOL:
                continue
            nxt = options.step if g.limit_to_send > 0 else _smallest(charger, options)
            step = [x * nxt for x in _per_amp(charger, g.phases)]
            blocked = []
            path = paths[charger.id]
            for node, seen in zip(path, _along(path, step), strict=True):
                limit, nc = oracle[node.id]
                total, _, directions = before[node.id]
                for p in range(3):
                    if abs(seen[p]) < 1e-12:
                        continue
                    after = abs(total[p] + seen[p])
                    exact = len(directions[p]) <= 1
                    if after * (1 if exact else _MODEL_LOSS) + nc[p] > limit - TOL:
                        blocked.append((node.id, p))
                if node.max_imbalance is not None:
                    granted, reserved = loads[node.id]
                    attributed = [a + b for a, b in zip(granted, reserved, strict=True)]
                    used = {x.index for x in g.phases}
                    for p in used:
                        for q in range(3):
                            if q not in used and (
                                attributed[p] - attributed[q] + nxt > node.max_imbalance - TOL
                            ):
                                blocked.append((node.id, "imbalance"))
            assert blocked, (charger, g)
            assert g.reasons, g
            if g.limit_to_send == 0:
                assert LimitKind.PAUSED_BELOW_MIN in {r.kind for r in g.reasons}


def _check_imbalance(tree: Node, alloc: Allocation) -> None:
    """(6) max - min phase of the chargers' load <= the node's limit, unless reservations alone
    break it; then no controllable car making it worse is granted anything."""
    for node in _nodes(tree):
        if node.max_imbalance is None:
            continue
        granted, reserved = _node_loads(node, alloc)
        total = [a + b for a, b in zip(granted, reserved, strict=True)]
        for p, q in itertools.permutations(range(3), 2):
            if total[p] - total[q] <= node.max_imbalance + TOL:
                continue
            for charger in node.chargers():
                for cid in charger.connector_ids:
                    g = alloc.connector(charger.id, cid)
                    used = {x.index for x in g.phases}
                    if not g.reserved and p in used and q not in used:
                        assert g.limit_to_send == 0, (node.id, p, q, g)


# --- random sites -------------------------------------------------------------------------------

_MAX_DEPTH = 4


def _deci(lo: int, hi: int) -> st.SearchStrategy[float]:
    """Amps with one decimal, as chargers and fuses are configured."""
    return st.integers(lo, hi).map(lambda n: n / 10)


@dataclass
class Scenario:
    tree: Node
    demands: list[Demand]
    measurements: list[Measurement]
    policy: Policy
    options: AllocationOptions

    def run(self) -> Allocation:
        return allocate(
            self.tree, self.demands, self.measurements, NOW, self.policy, options=self.options
        )


# Strategies are built once: building them inside the draw dominates the run time.
_INDEX = {n: st.integers(0, n) for n in (2, 3, 4, 5, 6, 9)}
_AMPS_CHARGER = _deci(60, 320)
_AMPS_NODE = _deci(0, 1600)
_AMPS_CAR = _deci(0, 400)
_AMPS_METER = _deci(-50, 300)
_FRACTION = st.integers(0, 10).map(lambda n: n / 10)
_PHASE_COUNT = st.sampled_from((1, 3))
_WIRING = st.sampled_from((Wiring.LN, Wiring.LL, Wiring.LL, Wiring.THREE_PHASE))
_RATIO = st.sampled_from((1.0, 2.0, 4.0))
_HISTORY_AGE = st.integers(0, 14_400)
_ENERGY = st.integers(0, 60_000).map(float)
_DEPARTS_IN = st.integers(-3_600, 36_000)
_MIN_CURRENT = st.sampled_from((6.0, 6.0, 6.0, 0.0, 8.0, 10.0))
_ROTATION = st.one_of(st.none(), st.permutations((L1, L2, L3)))
_CONNECTORS = st.sampled_from(((1,), (1,), (1, 2)))
_PRIORITY = st.integers(0, 2)
_TX_DEFAULT = st.sampled_from((0.0, 0.0, 0.0, 6.0))
_MAYBE_IMBALANCE = st.one_of(st.none(), _deci(0, 300))
_MAYBE_LIMIT = st.one_of(st.none(), _AMPS_CHARGER)
_MAYBE_CAR = st.one_of(st.none(), _AMPS_CAR)
_DRAW = {
    n: st.one_of(
        st.none(),
        st.lists(
            # 0.9 / 1.0: either side of the default threshold for a phase in use
            st.one_of(st.sampled_from((0.0, 0.9, 1.0)), _AMPS_CAR),
            min_size=n,
            max_size=n,
        ).map(tuple),
    )
    for n in (1, 3)
}
_ARRIVAL_AGE = st.integers(0, 7200)
_READING_AGE = st.integers(0, 400)
_METER_AGE = st.integers(0, 120)
_STEP = st.sampled_from((0.1, 0.1, 1.0))
_POLICY = st.sampled_from(list(Policy))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    ids = itertools.count()
    # A third of the sites are calm: no meters, dynamic limits or uncontrollable load, so that
    # the sharing itself (not only the safety fallbacks) gets most of the examples.
    calm = draw(_INDEX[2]) == 0

    def charger() -> ChargerSpec:
        wiring = draw(_WIRING)
        lines = {Wiring.LN: 1, Wiring.LL: 2, Wiring.THREE_PHASE: 3}[wiring]
        max_current = draw(_AMPS_CHARGER)
        rotation = draw(_ROTATION)
        return ChargerSpec(
            f"cp{next(ids)}",
            max_current,
            connector_ids=draw(_CONNECTORS),
            min_current=min(draw(_MIN_CURRENT), max_current),
            wiring=wiring,
            phase_rotation=None if rotation is None else tuple(rotation[:lines]),
            priority=draw(_PRIORITY),
            tx_default_limit=0.0 if calm else draw(_TX_DEFAULT),
            ignores_profile=not calm and draw(_INDEX[9]) == 0,
        )

    def node(depth: int) -> Node:
        children: list[Node | ChargerSpec] = []
        for _ in range(max(2 if depth == 1 else 0, draw(_INDEX[6 if depth == 1 else 4]))):
            if depth < _MAX_DEPTH and draw(_INDEX[2]) == 0:
                children.append(node(depth + 1))
            else:
                children.append(charger())
        max_current = draw(_AMPS_NODE)
        return Node(
            f"n{next(ids)}",
            max_current,
            safety_current=round(max_current * draw(_FRACTION), 1),
            dynamic_limit=draw(_AMPS_NODE) if not calm and draw(_INDEX[4]) == 0 else None,
            max_imbalance=draw(_MAYBE_IMBALANCE),
            metered=not calm and draw(_INDEX[4]) == 0,
            children=tuple(children),
            delta_wye_ratio=draw(_RATIO) if draw(_INDEX[5]) == 0 else None,
        )

    tree = node(1)
    demands = []
    for spec in tree.chargers():
        for cid in spec.connector_ids:
            if draw(_INDEX[3]) == 0:
                continue
            measured = draw(_DRAW[spec.phases])
            limit = draw(_MAYBE_LIMIT)
            state = draw(_INDEX[2])  # 0: not started yet, 1: running, 2: paused
            deadline = draw(_INDEX[3]) == 0
            demands.append(
                Demand(
                    spec.id,
                    cid,
                    ago(draw(_ARRIVAL_AGE)),
                    measured=measured,
                    measured_at=ago(draw(_READING_AGE)) if measured is not None else None,
                    limit_in_force=limit,
                    limit_since=ago(draw(_READING_AGE)) if limit is not None else None,
                    car_max=draw(_MAYBE_CAR),
                    departure=ago(-draw(_DEPARTS_IN)) if deadline else None,
                    energy_needed=draw(_ENERGY) if deadline else None,
                    energy_delivered=draw(_ENERGY),
                    running_since=ago(draw(_HISTORY_AGE)) if state == 1 else None,
                    paused_since=ago(draw(_HISTORY_AGE)) if state == 2 else None,
                )
            )
    measurements = []
    for item in tree.walk():
        # Metered nodes mostly have a reading; others sometimes do (a reading makes a meter).
        if calm:
            break
        if isinstance(item, Node) and draw(_INDEX[3]) < (3 if item.metered else 1):
            measurements.append(
                Measurement(
                    item.id,
                    (draw(_AMPS_METER), draw(_AMPS_METER), draw(_AMPS_METER)),
                    ago(draw(_METER_AGE)),
                    failed=draw(_INDEX[5]) == 0,
                )
            )
    options = AllocationOptions(step=draw(_STEP))
    return Scenario(tree, demands, measurements, draw(_POLICY), options)


_ONE_PHASE = st.sampled_from((L1, L2, L3))
_TIGHT_IMBALANCE = _deci(60, 250)


@st.composite
def unbalanced_sites(draw: st.DrawFn) -> Scenario:
    """1-phase cars under a tight imbalance limit: whether one fits depends on the others."""
    chargers = []
    demands = []
    for i in range(draw(st.integers(2, 8))):
        phases = 3 if draw(_INDEX[4]) == 0 else 1
        rotation = (draw(_ONE_PHASE),) if phases == 1 else None
        chargers.append(
            ChargerSpec(
                f"cp{i}",
                draw(_AMPS_CHARGER),
                phases=phases,
                phase_rotation=rotation,
                priority=draw(_PRIORITY),
            )
        )
        demands.append(Demand(f"cp{i}", 1, ago(draw(_ARRIVAL_AGE))))
    tree = Node(
        "site", draw(_AMPS_NODE), max_imbalance=draw(_TIGHT_IMBALANCE), children=tuple(chargers)
    )
    return Scenario(tree, demands, [], draw(_POLICY), AllocationOptions(step=draw(_STEP)))


def _property(fast: int):  # type: ignore[no-untyped-def]
    return settings(
        max_examples=_examples(fast),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


@_property(300)
@given(scenarios())
def test_no_node_limit_is_exceeded(s: Scenario) -> None:
    alloc = s.run()
    _check_counted_honestly(s.tree, s.demands, alloc, s.options)
    _check_limits(s.tree, s.measurements, alloc, s.options)


@_property(150)
@given(scenarios())
def test_grants_are_zero_or_between_min_and_max(s: Scenario) -> None:
    _check_grant_range(s.tree, s.run(), s.options)


@_property(300)
@given(st.one_of(scenarios(), unbalanced_sites()))
def test_capacity_is_not_left_idle(s: Scenario) -> None:
    _check_work_conserving(s.tree, s.measurements, s.run(), s.options)


@_property(100)
@given(scenarios(), st.randoms(use_true_random=False))
def test_same_input_same_output(s: Scenario, rnd: random.Random) -> None:
    first = s.run()
    assert s.run() == first
    rnd.shuffle(s.demands)
    rnd.shuffle(s.measurements)
    assert s.run() == first


@_property(200)
@given(st.one_of(scenarios(), unbalanced_sites()))
def test_imbalance_limits_hold(s: Scenario) -> None:
    _check_imbalance(s.tree, s.run())


# --- wiring as it is ----------------------------------------------------------------------------


def LL(cid: str, lines: tuple[Phase, Phase], max_current: float = 32, **kw: object) -> ChargerSpec:
    return ChargerSpec(
        cid,
        max_current,
        wiring=Wiring.LL,
        phase_rotation=lines,
        voltage=208,
        **kw,  # type: ignore[arg-type]
    )


WIRING_CASES = [
    Case(
        "an L-L charger loads both its lines with its one current",
        Node("site", 20, children=(LL("a", (L1, L2)),)),
        [car("a")],
        {"a": 20},
        per_phase={"a": (20, 20, 0)},
    ),
    Case(
        "two L-L chargers sharing L1 make sqrt(3) x 32 = 55.4 A on it, not 64 A",
        Node("site", 56, children=(LL("a", (L1, L2)), LL("b", (L3, L1)))),
        [car("a", 2), car("b", 1)],
        {"a": 32, "b": 32},
    ),
    Case(
        "the arithmetic sum would have held them to 27.7 A each; the phasor sum allows 32",
        Node("site", 55.5, children=(LL("a", (L1, L2)), LL("b", (L1, L3)))),
        [car("a", 2), car("b", 1)],
        {"a": 32, "b": 32},
    ),
    Case(
        "an L-N car and an L-L car on one line are 30 degrees apart",
        Node("site", 40, children=(C("n", phases=1), LL("b", (L1, L2)))),
        [car("n", 2), car("b", 1)],
        # |x + x e^{i30°}| = 1.932 x <= 40 A: 20.7 A each, where 2 x <= 40 would give 20 A
        {"n": 20.7, "b": 20.7},
    ),
    Case(
        "behind a delta-wye transformer one L-L pair counts twice on a primary line",
        Node(
            "primary",
            36.1,
            delta_wye_ratio=4,
            children=(Node("secondary", 83.3, children=(LL("a", (L3, L1)), LL("b", (L3, L1)))),),
        ),
        [car("a", 2), car("b", 1)],
        {"a": 32, "b": 32},
    ),
    Case(
        "... so three such cars are held to 2 x 72.2 / 4 = 36.1 A primary: 24 A each",
        Node(
            "primary",
            36.1,
            delta_wye_ratio=4,
            children=(
                Node(
                    "secondary",
                    83.3,
                    children=(LL("a", (L3, L1)), LL("b", (L3, L1)), LL("c", (L1, L3))),
                ),
            ),
        ),
        [car("a", 3), car("b", 2), car("c", 1)],
        {"a": 24.1, "b": 24.1, "c": 24},
        reasons={"a": {LimitKind.NODE_LIMIT}},
    ),
]


@pytest.mark.parametrize("case", WIRING_CASES, ids=[c.name for c in WIRING_CASES])
def test_wiring_examples(case: Case) -> None:
    test_examples(case)


def test_an_l_l_charger_reserves_its_draw_on_both_lines() -> None:
    tree = Node("site", 40, children=(LL("x", (L2, L3), ignores_profile=True), C("a", phases=1)))
    alloc = allocate(tree, [car("x", measured=(10,), measured_at=ago(5)), car("a")], [], NOW)
    assert alloc.connector("x", 1).per_phase == (0, 10, 10)
    assert alloc.connector("a", 1).limit_to_send == 32


def test_existing_configurations_keep_their_meaning() -> None:
    assert C("a", phases=1).wiring is Wiring.LN
    assert C("a", phases=3).wiring is Wiring.THREE_PHASE
    assert C("a").wiring is Wiring.THREE_PHASE
    assert C("a", wiring=Wiring.LL).grid_phases == (L1, L2)
    assert C("a", wiring=Wiring.LL).phases == 1  # it reports one current
    with pytest.raises(ConfigError):
        C("a", wiring=Wiring.LL, phases=3)
    with pytest.raises(ConfigError):
        C("a", wiring=Wiring.LL, phase_rotation=(L1,))
    with pytest.raises(ConfigError):
        C("a", wiring=Wiring.LL, phase_rotation=(L2, L2))


def test_watts_per_wiring() -> None:
    assert amps_to_watts(32, 1, 208, wiring=Wiring.LL) == 6_656
    assert watts_to_amps(6_656, 1, 208, wiring=Wiring.LL) == pytest.approx(32)
    with pytest.raises(ConfigError):
        amps_to_watts(32, 2, 208, wiring=Wiring.LL)
    assert LL("a", (L1, L2)).watts_per_amp() == 208
    assert C("b").watts_per_amp(1) == 230  # a one-phase car on a three-phase charger


_ANGLE_SETS = st.sampled_from(
    (
        (0.0, 30.0, -30.0),  # L-N / three-phase and both L-L pairs on one secondary line
        (30.0, -30.0, -90.0, 0.0, -60.0),  # what a delta-wye primary line sees
        (10.0, 100.0, 170.0),  # any arc below 180 degrees
        (0.0, 90.0, 150.0, -120.0, -30.0),  # wider: below a transformer below a transformer
    )
)


@_property(300)
@given(
    _ANGLE_SETS.flatmap(
        lambda angles: st.lists(
            st.tuples(st.sampled_from(angles), st.integers(0, 80_000), st.booleans()),
            min_size=1,
            max_size=8,
        )
    )
)
def test_phasor_rows_bound_the_line_current_tightly(loads: list[tuple[float, int, bool]]) -> None:
    """Safe: every row's value is at least the exact |sum|; tight: the largest is within 0.21 %."""
    from harmone.loadmgmt.phasors import LineItem, sectors
    from harmone.loadmgmt.problem import SCALE

    items = [
        LineItem(i if controllable else -1, 1.0 if controllable else float(ma), angle)
        for i, (angle, ma, controllable) in enumerate(loads)
    ]
    grants = {i: ma for i, (_, ma, controllable) in enumerate(loads) if controllable}
    exact = abs(sum(ma * cmath.exp(1j * math.radians(a)) for a, ma, _ in loads))
    rows = [
        (row.fixed + sum(c * grants[k] for k, c in row.coefficients.items())) / SCALE
        for row in sectors(items)
    ]
    # mA; coefficients are rounded up to 1e-6, so each load may add up to 0.08 mA.
    assert max(rows) >= exact - 1e-6
    assert max(rows) <= exact * _MODEL_LOSS + 0.1 * len(loads) + 1


# --- taking turns and deadlines -----------------------------------------------------------------

_ROUND = timedelta(minutes=5)


@_property(25)
@given(
    cars=st.integers(2, 9),
    slots=st.integers(1, 3),
    min_run=st.sampled_from((15, 30)),
    max_wait=st.sampled_from((30, 90)),
    energies=st.lists(st.integers(0, 20_000), min_size=9, max_size=9),
)
def test_paused_cars_take_turns_without_flapping(
    cars: int, slots: int, min_run: int, max_wait: int, energies: list[int]
) -> None:
    """Rounds of a controller on a site where only `slots` mins fit, histories fed back.

    Bound (docs/load-management.md, "Taking turns"): no car waits longer than
    max_wait + ceil((cars - slots) / slots) x (min_run + one round) + one round while others
    charge; every turn lasts at least min_run; every round uses every slot.
    """
    slots = min(slots, cars - 1)
    options = AllocationOptions(
        step=1.0, min_run=timedelta(minutes=min_run), max_wait=timedelta(minutes=max_wait)
    )
    tree = Node(
        "site", 6 * slots + 5, children=tuple(C(f"c{i}", 16, phases=1) for i in range(cars))
    )
    energy = [float(e) for e in energies[:cars]]
    running: dict[int, datetime] = {}
    paused: dict[int, datetime] = {}
    waits: list[list[timedelta]] = [[] for _ in range(cars)]
    runs: list[list[timedelta]] = [[] for _ in range(cars)]
    start = NOW  # arrival: the first round
    for r in range(8 * 12):
        now = NOW + r * _ROUND
        demands = [
            Demand(
                f"c{i}",
                1,
                start + timedelta(seconds=i),
                energy_delivered=energy[i],
                running_since=running.get(i),
                paused_since=paused.get(i),
            )
            for i in range(cars)
        ]
        alloc = allocate(tree, demands, [], now, options=options)
        grants = [alloc.connector(f"c{i}", 1).limit_to_send for i in range(cars)]
        assert sum(1 for g in grants if g > 0) == slots
        for i, g in enumerate(grants):
            if g > 0:
                if i not in running:
                    if i in paused:
                        waits[i].append(now - paused.pop(i))
                    else:
                        waits[i].append(now - start)
                    running[i] = now
                energy[i] += g * 230 * _ROUND.total_seconds() / 3600
            elif i in running:
                runs[i].append(now - running.pop(i))
                paused[i] = now
    end = NOW + 8 * 12 * _ROUND
    bound = (
        options.max_wait + math.ceil((cars - slots) / slots) * (options.min_run + _ROUND) + _ROUND
    )
    for i in range(cars):
        still = [end - paused[i]] if i in paused else []
        assert all(w <= bound for w in waits[i] + still), (i, waits[i], still, bound)
        assert all(run >= options.min_run for run in runs[i]), (i, runs[i])


def test_a_paused_car_goes_first_after_max_wait_and_a_new_turn_is_protected() -> None:
    tree = Node("site", 11, children=(C("a", 16, phases=1), C("b", 16, phases=1)))
    options = AllocationOptions(min_run=timedelta(minutes=30), max_wait=timedelta(minutes=60))
    # a has had much more energy, but b started only 10 minutes ago: b keeps its turn.
    a = car("a", 120, energy_delivered=20_000, paused_since=ago(50 * 60))
    b = car("b", 100, energy_delivered=1_000, running_since=ago(10 * 60))
    alloc = allocate(tree, [a, b], [], NOW, options=options)
    assert (alloc.connector("a", 1).limit_to_send, alloc.connector("b", 1).limit_to_send) == (0, 11)
    # Past b's min_run, the car with less energy goes first: still b.
    b = car("b", 100, energy_delivered=1_000, running_since=ago(40 * 60))
    alloc = allocate(tree, [a, b], [], NOW, options=options)
    assert alloc.connector("a", 1).limit_to_send == 0
    # Once a has waited max_wait, it goes before b, however much energy it had.
    a = car("a", 120, energy_delivered=20_000, paused_since=ago(61 * 60))
    alloc = allocate(tree, [a, b], [], NOW, options=options)
    assert (alloc.connector("a", 1).limit_to_send, alloc.connector("b", 1).limit_to_send) == (11, 0)
    assert LimitKind.PAUSED_BELOW_MIN in {r.kind for r in alloc.connector("b", 1).reasons}


def test_a_car_with_a_deadline_gets_what_finishes_it_in_time() -> None:
    tree = Node("site", 40, children=(C("a", phases=1), C("b", phases=1), C("c", phases=1)))
    # a leaves in an hour and needs 4.6 kWh: 20 A x 230 V; b and c have all day.
    a = car("a", 30, departure=ago(-3600), energy_needed=4_600)
    b = car("b", 20, departure=ago(-8 * 3600), energy_needed=10_000)
    c = car("c", 10, departure=ago(-8 * 3600), energy_needed=10_000)
    alloc = allocate(tree, [a, b, c], [], NOW, options=AllocationOptions(deadline_margin=1.0))
    grants = {g.charger_id: g.limit_to_send for g in alloc.connectors}
    # Least laxity first: a is given its 20 A, b and c what they need (less than their min:
    # their min); then a, the most urgent, takes what is left.
    assert grants == {"a": 28, "b": 6, "c": 6}


def test_without_deadlines_the_least_served_car_is_started_first() -> None:
    tree = Node("site", 13, children=(C("a", phases=1), C("b", phases=1), C("c", phases=1)))
    demands = [
        car("a", 30, energy_delivered=9_000, paused_since=ago(600)),
        car("b", 20, energy_delivered=1_000, paused_since=ago(600)),
        car("c", 10, energy_delivered=5_000, paused_since=ago(600)),
    ]
    alloc = allocate(tree, demands, [], NOW)
    assert [g.limit_to_send for g in alloc.connectors] == [0, 6.5, 6.5]
