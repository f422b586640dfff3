"""In-memory limits on failed sign-ins, per e-mail address and per client address.

Why in memory: the limit only has to slow down password guessing against one process; a
restart forgetting the counters is acceptable, and no database write is spent on a failure.
Only failures count, within a sliding window. A success clears the failures of that e-mail
(a person who finally remembers the password is not kept waiting) but not those of the
address, so that one valid account cannot be used to reset an attacker's address budget.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LoginLimits", "LoginRateLimiter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """How many failures are allowed within `window` seconds before sign-in is refused."""

    per_email: int = 5
    #: Higher than per e-mail: several people may share one address (an office NAT).
    per_address: int = 20
    window: float = 300.0
    #: Bound on remembered keys, so that a flood of made-up e-mails cannot exhaust memory.
    max_keys: int = 10_000


class LoginRateLimiter:
    """Counts failed sign-ins; `retry_after()` says how long a key must wait (0: may try)."""

    def __init__(
        self, limits: LoginLimits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or LoginLimits()
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    @staticmethod
    def _keys(email: str, address: str) -> tuple[str, str]:
        return f"email:{email.strip().lower()}", f"addr:{address}"

    def _recent(self, key: str, now: float) -> deque[float]:
        hits = self._failures.get(key)
        if hits is None:
            return deque()
        while hits and hits[0] <= now - self.limits.window:
            hits.popleft()
        if not hits:
            del self._failures[key]
        return hits

    def retry_after(self, email: str, address: str) -> float:
        """Seconds until a sign-in for `email` from `address` may be tried again (0: now)."""
        now = self._clock()
        wait = 0.0
        email_key, addr_key = self._keys(email, address)
        for key, limit in ((email_key, self.limits.per_email), (addr_key, self.limits.per_address)):
            hits = self._recent(key, now)
            if len(hits) >= limit:
                # The oldest failure that keeps the count at the limit must leave the window.
                wait = max(wait, hits[len(hits) - limit] + self.limits.window - now)
        return wait

    def failed(self, email: str, address: str) -> None:
        now = self._clock()
        if len(self._failures) >= self.limits.max_keys:
            self._sweep(now)
        for key in self._keys(email, address):
            hits = self._failures.setdefault(key, deque())
            hits.append(now)
            # Never more than needed to decide: the largest limit.
            while len(hits) > max(self.limits.per_email, self.limits.per_address):
                hits.popleft()
        log.info("failed sign-in for %s from %s", email.strip().lower()[:320], address)

    def succeeded(self, email: str) -> None:
        self._failures.pop(self._keys(email, "")[0], None)

    def _sweep(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        while len(self._failures) >= self.limits.max_keys:
            # Still full of live keys: forget the oldest (dicts keep insertion order).
            del self._failures[next(iter(self._failures))]

    @staticmethod
    def describe(wait: float) -> str:
        """'Try again in 4 minutes.' for a wait in seconds."""
        if wait <= 60:
            seconds = max(1, math.ceil(wait))
            return f"Try again in {seconds} second{'s' if seconds != 1 else ''}."
        minutes = math.ceil(wait / 60)
        return f"Try again in {minutes} minutes."
