"""Injected time, so that tests and simulations are exact.

`Clock` reads time; `Timer` also waits for it. Core code never calls `time.monotonic()`,
`time.time()`, `datetime.now()` or `asyncio.sleep(seconds)` itself: it is given a clock, so that a
`ManualClock` can drive a simulation of minutes in milliseconds, deterministically.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "Timer", "utcnow"]

#: Turns of the event loop that `ManualClock` gives woken tasks to finish what they can do
#: without time passing (a chain of awaits that each need one turn).
_SETTLE_TURNS = 64
#: At most this many turns per settle when the loop shows that something is still ready.
_SETTLE_MAX_TURNS = 10_000


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...


class Timer(Clock, Protocol):
    """A clock that can also be waited on."""

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: monotonic seconds for deadlines, aware UTC datetimes for records."""

    #: the function itself, not a method that calls it: the relay reads it at every frame
    monotonic = staticmethod(time.monotonic)

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """Time that moves only when told to (`advance`, `run_until`).

    `sleep` parks the caller until the clock passes its deadline; `advance` moves time forward
    deadline by deadline, waking each sleeper at its own instant and letting the event loop run
    what that wakes before moving on, so that a task that sleeps again in reaction is woken at
    the right simulated time too. Only for code whose every wait goes through this clock (or
    completes without time passing, like in-process queues).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self.start = start or datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
        self.t = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._order), fut))
        await fut

    def next_deadline(self) -> float | None:
        """The earliest instant a live sleeper waits for."""
        while self._sleepers and self._sleepers[0][2].done():  # cancelled sleepers
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def settle(self) -> None:
        """Let every task that can run without time passing run.

        Turns the event loop until nothing else is ready to run (bounded: a task that only
        ever yields cannot hold the clock forever). On a loop that does not show its ready
        queue, `_SETTLE_TURNS` turns.
        """
        ready = getattr(asyncio.get_running_loop(), "_ready", None)  # asyncio's due callbacks
        for turn in range(_SETTLE_MAX_TURNS):
            await asyncio.sleep(0)
            if ready is None and turn + 1 >= _SETTLE_TURNS:
                return
            if ready is not None and not ready:
                return

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking sleepers in deadline order."""
        await self.run_until(self.t + seconds)

    async def run_until(self, at: float) -> None:
        await self.settle()
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > at:
                break
            self.t = max(self.t, deadline)
            while self._sleepers and self._sleepers[0][0] <= self.t:
                _, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    fut.set_result(None)
            await self.settle()
        self.t = max(self.t, at)
        await self.settle()


def utcnow() -> datetime:
    return datetime.now(UTC)
