"""Exponential reconnect backoff with jitter, so that chargers whose CPMS dropped at the same
moment do not all dial back at the same moment."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    def __init__(
        self,
        initial: float,
        maximum: float,
        jitter: float,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self._rand = rand
        self._next = initial

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the base up to the cap."""
        base = self._next
        self._next = min(self.maximum, self._next * 2)
        return base * (1 - self.jitter + 2 * self.jitter * self._rand())

    def reset(self) -> None:
        self._next = self.initial
