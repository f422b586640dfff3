"""Line currents as phasors, and the linear constraints that keep them within a limit.

Every load is assumed to draw in phase with the voltage across it (unity power factor, as the
power-factor-corrected on-board chargers of cars do). With line Lp's voltage at -120p degrees:

* an L-N load on Lp, or a three-phase load, puts its current on Lp at -120p degrees;
* an L-L load between Lp and the next line Lq (L1-L2, L2-L3, L3-L1) is in phase with the
  line-to-line voltage: on Lp at 30 degrees ahead of Lp's voltage, on Lq 30 degrees behind Lq's;
* below the delta primary of a delta-wye transformer with turns ratio r, primary line Lp
  carries (secondary Lp - secondary Lp-1) / r.

So a line carries |sum of I_k * v_k| with fixed unit phasors v_k: less than the arithmetic sum
when the v_k differ (two L-L loads sharing a line: sqrt(3) instead of 2 when equal). That
magnitude is convex but not linear; the allocator needs linear rows. The v_k of a line lie in
one arc narrower than 180 degrees (60 on a secondary line, 120 on a delta primary), and so does
their sum z; where they do not (a transformer below a transformer), the arc is the whole
circle. The arc is cut into sectors of at most `MAX_SECTOR` degrees; for z in a sector of
half-width w centred on phi, |z| <= Re(z * e^{-i phi}) / cos(w), and that right-hand side is
linear in the currents. One row per sector, each row <= limit, therefore bounds |z| by the
limit wherever z lies (safe), and over-counts |z| by at most 1/cos(w) - 1 = 0.21 % (uses what
is there). When all loads of a line point the same way (no L-L loads, no transformer), the one
row is the plain sum, exact.
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from harmone.loadmgmt.model import ChargerSpec, Wiring
from harmone.loadmgmt.problem import SCALE

__all__ = ["MAX_SECTOR", "LineItem", "Sector", "charger_lines", "sectors", "through_delta"]

#: Widest sector, degrees: the model over-counts a line current by at most 1/cos(3.75°) - 1.
MAX_SECTOR = 7.5
#: Angles closer than this (degrees) are the same direction.
_SAME = 1e-6


def _norm(angle: float) -> float:
    """An angle in (-180, 180], rounded so that float noise does not split one direction."""
    a = math.fmod(angle, 360.0)
    if a <= -180.0:
        a += 360.0
    elif a > 180.0:
        a -= 360.0
    return round(a, 9)


def charger_lines(charger: ChargerSpec, used: Iterable[int]) -> tuple[tuple[int, float], ...]:
    """(grid line, angle of one amp on it) for each line the charger's current flows on.

    `used` are the grid lines in use (all of them for L-L: its current flows on both).
    """
    if charger.wiring is Wiring.LL:
        p, q = (ph.index for ph in charger.grid_phases)
        lead, lag = (p, q) if (p + 1) % 3 == q else (q, p)
        return tuple(
            sorted(((lead, _norm(-120.0 * lead + 30.0)), (lag, _norm(-120.0 * lag - 30.0))))
        )
    return tuple((p, _norm(-120.0 * p)) for p in sorted(used))


class LineItem(NamedTuple):
    """One load on one line: `owner` is a connector index (`size` per mA of its grant) or -1 for
    a fixed load (`size` in mA)."""

    owner: int
    size: float
    angle: float


def through_delta(
    items: Sequence[tuple[int, int, float, float]], ratio: float
) -> list[tuple[int, int, float, float]]:
    """(owner, line, size, angle) seen on the primary side of a delta-wye transformer."""
    acc: dict[tuple[int, int], complex] = {}
    for owner, line, size, angle in items:
        c = cmath.rect(size, math.radians(angle)) / ratio
        for target, sign in ((line, 1), ((line + 1) % 3, -1)):
            acc[(owner, target)] = acc.get((owner, target), 0j) + sign * c
    out = []
    for (owner, line), c in sorted(acc.items()):
        size = abs(c)
        if size > 1e-12:
            out.append((owner, line, size, _norm(math.degrees(cmath.phase(c)))))
    return out


@dataclass(frozen=True, slots=True)
class Sector:
    """One row of a line: coefficient per mA for each owner, and the fixed loads' share (both
    scaled by `SCALE`, rounded up so that the row never under-counts)."""

    coefficients: dict[int, int]
    fixed: int


def _arc(angles: list[float]) -> tuple[float, float] | None:
    """The narrowest arc (start, width) holding all angles, or None if none is below 180."""
    ordered = sorted(set(angles))
    if len(ordered) == 1:
        return ordered[0], 0.0
    gaps = [(ordered[(i + 1) % len(ordered)] - a) % 360.0 or 360.0 for i, a in enumerate(ordered)]
    widest = max(range(len(gaps)), key=lambda i: (gaps[i], -i))
    if gaps[widest] <= 180.0 + _SAME:
        return None
    start = ordered[(widest + 1) % len(ordered)]
    return start, 360.0 - gaps[widest]


def _up(value: float) -> int:
    # Coefficients are rounded up (never under-count); 1e-9 absorbs float noise on exact ones.
    return math.ceil(value - 1e-9)


def sectors(items: Sequence[LineItem]) -> list[Sector]:
    """The rows that bound the line current of `items` (see the module docstring)."""
    loaded = [it for it in items if it.size > 0]
    angles = {it.angle for it in loaded}
    arc = _arc(list(angles)) if len(angles) > 1 else (0.0, 0.0)
    if arc is None:
        # No arc under 180 degrees holds them (a transformer below a transformer): the sectors
        # go round the whole circle, which bounds |z| wherever z lies, as tightly.
        arc = (0.0, 360.0)
    if arc[1] <= _SAME:
        # One direction: the sum is exact.
        coefficients: dict[int, int] = {}
        fixed = 0
        for it in loaded:
            if it.owner < 0:
                fixed += _up(it.size * SCALE)
            else:
                coefficients[it.owner] = coefficients.get(it.owner, 0) + _up(it.size * SCALE)
        return [Sector(coefficients, fixed)]
    start, width = arc
    count = max(1, math.ceil(width / MAX_SECTOR - _SAME))
    half = math.radians(width / count / 2)
    out = []
    for j in range(count):
        centre = math.radians(start) + half * (2 * j + 1)
        coefficients = {}
        fixed_sum = 0.0
        for it in loaded:
            share = it.size * math.cos(math.radians(it.angle) - centre) / math.cos(half) * SCALE
            if it.owner < 0:
                fixed_sum += share
            else:
                coefficients[it.owner] = coefficients.get(it.owner, 0) + _up(share)
        out.append(Sector(coefficients, _up(fixed_sum)))
    return out


def magnitude(items: Iterable[tuple[float, float]]) -> float:
    """|sum of size * e^{i angle}| (mA); the plain sum when all point the same way."""
    pairs = [(s, a) for s, a in items if s > 0]
    if not pairs:
        return 0.0
    if all(abs(a - pairs[0][1]) <= _SAME for _, a in pairs):
        return float(sum(s for s, _ in pairs))
    return abs(sum(cmath.rect(s, math.radians(a)) for s, a in pairs))
