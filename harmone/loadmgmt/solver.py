"""Integer grants under linear constraints ``sum(coefficient * grant) <= slack``; grants only go up.

Internal to `allocate`. Coefficients are integers (`problem.SCALE` is 1): +1 for a connector on
a line with only same-direction loads, a phasor share for lines with L-L loads or behind a
transformer, +1 / -1 on imbalance rows. A negative coefficient means a grant frees that row.

Termination: fill advances a level by at least one step (bounded by the largest need) or
freezes at least one car per iteration; every productive settle pass adds at least one step to
a bounded sum of grants, and a pass without change ends it.
"""

from __future__ import annotations

import heapq

from harmone.loadmgmt.problem import Conn

__all__ = ["ROUND_ROBIN_ROUNDS", "Solver"]

#: Round-robin top-up rounds per tier before the remainder is handed out in order; leftovers
#: after water-filling are below one step per car, so more rounds would rarely change anything.
ROUND_ROBIN_ROUNDS = 8


class Solver:
    """Grants in mA; `slack[k]` is what row k has left (in its scaled units)."""

    __slots__ = ("grant", "need", "pos", "posrows", "slack", "smallest", "step", "terms")

    def __init__(self, slack: list[int], conns: list[Conn], step: int) -> None:
        self.slack = slack
        self.step = step
        self.grant = [0] * len(conns)
        self.need = [c.need for c in conns]
        self.smallest = [c.smallest for c in conns]
        self.terms = [c.terms for c in conns]
        self.pos = [[(k, a) for k, a in c.terms if a > 0] for c in conns]
        self.posrows = [{k for k, _ in p} for p in self.pos]

    def room(self, c: int) -> int:
        """How much more connector `c` could be granted (mA) without breaking a row."""
        slack = self.slack
        return max(0, min((slack[k] // a for k, a in self.pos[c]), default=self.need[c]))

    def add(self, c: int, amount: int) -> None:
        self.grant[c] += amount
        slack = self.slack
        for k, a in self.terms[c]:
            slack[k] -= a * amount

    def admit(self, order: list[int]) -> list[int]:
        """Start each car of `order` at its min current, in order, while that fits."""
        admitted = []
        for c in order:
            if self.grant[c] == 0 and self.room(c) >= self.smallest[c]:
                self.add(c, self.smallest[c])
            if self.grant[c] > 0:
                admitted.append(c)
        return admitted

    def raise_to(self, order: list[int], targets: dict[int, int]) -> None:
        """Greedily, in `order`, raise each car towards its target (at most its need)."""
        step, grant, need = self.step, self.grant, self.need
        for c in order:
            if grant[c] == 0:
                continue  # paused: only `admit` starts a car, at its min
            more = min(targets.get(c, need[c]), need[c]) - grant[c]
            more = min(more, self.room(c) // step * step)
            if more > 0:
                self.add(c, more)

    def fill(
        self,
        members: list[int],
        caps: dict[int, int] | None = None,
        offsets: dict[int, int] | None = None,
    ) -> None:
        """Progressive filling: raise a common level; a car stops at its need (or its cap) or a
        tight row.

        A car stands at its grant plus its offset (mA, a multiple of the step; 0 if not given)
        and starts rising once the level reaches that height, so a car with a larger offset
        gets that much less when the level stops. Rates (the sum of the rising cars'
        coefficients per row) make each row's remaining room a division away, so an iteration
        costs only the rows touched by rising cars.
        """
        grant, slack, terms, step = self.grant, self.slack, self.terms, self.step
        need = list(self.need)
        if caps is not None:
            for c, cap in caps.items():
                need[c] = min(need[c], cap)
        base = offsets or {}
        # Heights: grants and needs shifted by each car's offset; the level is a height.
        height = {c: grant[c] + base.get(c, 0) for c in members}
        top = {c: need[c] + base.get(c, 0) for c in members}
        waiting = sorted((c for c in members if grant[c] < need[c]), key=lambda c: (height[c], c))
        if not waiting:
            return
        level = height[waiting[0]]
        next_wait = 0
        rising: dict[int, None] = {}  # insertion-ordered set
        rate: dict[int, int] = {}
        needs: list[tuple[int, int]] = []

        def start(c: int) -> None:
            rising[c] = None
            heapq.heappush(needs, (top[c], c))
            shift(c, 1)

        def stop(c: int) -> None:
            del rising[c]
            grant[c] = level - base.get(c, 0)
            shift(c, -1)

        def shift(c: int, sign: int) -> None:
            # Zero rates are dropped so that each iteration only visits rows that move; a car
            # on L1 and one on L2 cancel out on an L1-L2 imbalance row.
            for k, a in terms[c]:
                r = rate.get(k, 0) + sign * a
                if r:
                    rate[k] = r
                else:
                    del rate[k]

        # Rows that went tight while cars rose: a car on one of them that has not started yet
        # stays where it is (starting it would give the crumbs below a step per rising car to
        # the car standing highest, the last in line); `round_robin` hands them out instead.
        closed: set[int] = set()
        posrows = self.posrows
        while True:
            while next_wait < len(waiting) and height[waiting[next_wait]] <= level:
                c = waiting[next_wait]
                if closed.isdisjoint(posrows[c]):
                    start(c)
                next_wait += 1
            while needs and (needs[0][1] not in rising or needs[0][0] <= level):
                _, c = heapq.heappop(needs)
                if c in rising:
                    stop(c)
            if not rising:
                if next_wait == len(waiting):
                    return
                level = height[waiting[next_wait]]
                continue
            delta = needs[0][0] - level
            if next_wait < len(waiting):
                delta = min(delta, height[waiting[next_wait]] - level)
            tight = []
            for k, r in rate.items():
                if r > 0:
                    room = slack[k] // r // step * step
                    if room <= 0:
                        tight.append(k)
                    elif room < delta:
                        delta = room
            if tight:
                closed.update(tight)
                for k in tight:
                    for c in [c for c in rising if k in posrows[c]]:
                        stop(c)
                continue
            level += delta
            for k, r in rate.items():
                slack[k] -= r * delta

    def round_robin(self, members: list[int]) -> None:
        """Hand out what filling left (less than a step per car) one step per car per round."""
        step, grant, need = self.step, self.grant, self.need
        for _ in range(ROUND_ROBIN_ROUNDS):
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
