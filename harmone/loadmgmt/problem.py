"""The allocator's working state: the flattened tree, connectors and their constraints.

Internal to `allocate`. Everything is in integer milliamps; constraint rows are scaled by
`SCALE` so that the phasor coefficients of line-to-line loads stay integers too (see
`phasors.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from harmone.loadmgmt.model import (
    ChargerSpec,
    Demand,
    Limitation,
    LimitSource,
    MeterState,
    Node,
    Phase,
    PhaseCurrents,
)

__all__ = [
    "EPS",
    "PAIRS",
    "PHASES",
    "SCALE",
    "Conn",
    "FlatNode",
    "Row",
    "amps",
    "ma_down",
    "ma_up",
    "triple",
]

PHASES = (Phase.L1, Phase.L2, Phase.L3)
#: Ordered pairs (p, q) of an imbalance constraint load[p] - load[q] <= D.
PAIRS = ((0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1))
#: Float noise allowance when converting amps to milliamps (1 nA).
EPS = 1e-6
#: A coefficient of 1 in a constraint row (so that 0.866 is 866_026, rounded up).
SCALE = 1_000_000


def ma_down(amps_value: float) -> int:
    return math.floor(amps_value * 1000 + EPS)


def ma_up(amps_value: float) -> int:
    return math.ceil(amps_value * 1000 - EPS)


def amps(milliamps: float) -> float:
    return round(milliamps) / 1000


def triple(values: Sequence[float]) -> PhaseCurrents:
    return (amps(values[0]), amps(values[1]), amps(values[2]))


@dataclass(frozen=True, slots=True)
class Row:
    """What a constraint row limits: a node's line (one of its sectors), or an imbalance pair."""

    node: int
    line: int  # grid line index; -1 for an imbalance row
    pair: tuple[int, int] | None = None


class FlatNode:
    """A node with its effective limit and the loads counted against it (mutable work state)."""

    __slots__ = (
        "charger_load",
        "fixed",
        "imbalance_base",
        "limit",
        "line_load",
        "line_rows",
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
        # Reservations of uncontrollable connectors below, mA per grid phase as attributed
        # (an L-L reservation counts on both its lines): what imbalance limits see.
        self.fixed = [0, 0, 0]
        self.charger_load = [0, 0, 0]  # fixed + grants as attributed, filled in at the end
        self.line_load = [0.0, 0.0, 0.0]  # the line currents they make (phasor sum), mA
        self.line_rows: list[list[int]] = [[], [], []]  # constraint rows of each line
        self.imbalance_base = -1  # index of its first imbalance constraint, -1 if none


class Conn:
    """One connector of the tree and how it is counted."""

    __slots__ = (
        "charger",
        "connector_id",
        "demand",
        "fixed",
        "info",
        "lines",
        "need",
        "path",
        "phases",
        "smallest",
        "terms",
    )

    def __init__(self, charger: ChargerSpec, connector_id: int, path: tuple[int, ...]) -> None:
        self.charger = charger
        self.connector_id = connector_id
        self.path = path  # node indices, root first
        self.demand: Demand | None = None
        self.fixed: list[int] | None = None  # reservation per grid phase when uncontrollable
        self.phases: tuple[int, ...] = ()  # grid phase indices it loads
        # Its current on each grid line it loads, as (line, angle in degrees) of one amp of
        # its grant (or of its reservation, scaled by `fixed`).
        self.lines: tuple[tuple[int, float], ...] = ()
        self.need = 0  # mA; 0 = wants nothing (or cannot be granted anything)
        self.smallest = 0  # mA; its min current rounded up to the step
        self.info: list[Limitation] = []
        self.terms: list[tuple[int, int]] = []  # (constraint row, coefficient per mA)
