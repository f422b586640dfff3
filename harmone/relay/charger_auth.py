"""Charger authentication at the handshake: HTTP Basic, OCPP security profiles 1 and 2.

For a site with `charger_auth`, HARMON-E checks the charger's `Authorization: Basic` header
itself, before the CPMS is dialled: a charger that cannot prove who it is never reaches the
CPMS and cannot displace a connected charger of the same identity. OCPP requires the user
name to be the charge point identity (1.6 security whitepaper, 2.0.1 Part 2 A00.FR.203), and
each charger has its own password, stored only as an argon2id hash (the store verifies it
in a thread). The header itself is still forwarded to the CPMS unchanged, which may check it
too.

Guessing is bounded per charger: after `max_failures` wrong credentials within `window`
seconds the charger is refused with 429 until the oldest failure ages out, without checking
the password at all. The count lives in memory (a restart forgets it), which is enough to
make online guessing of a 16-character password hopeless.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Protocol
from urllib.parse import unquote

from harmone.relay.admission import Refusal
from harmone.store.records import PasswordCheck

__all__ = [
    "BASIC_CHALLENGE",
    "ChargerAuthenticator",
    "FailureCounter",
    "PasswordChecker",
    "parse_basic",
]

log = logging.getLogger(__name__)

#: Sent with every 401, so that a charger (or a person with curl) knows what is asked for.
BASIC_CHALLENGE = ("WWW-Authenticate", 'Basic realm="OCPP"')
#: What the charger is told on a wrong or unknown credential. The connection log says exactly
#: what was wrong; the charger's side does not need to learn which chargers have a password.
_FAILED_ANSWER = "charger authentication failed (HTTP Basic); the site's connection log says why"

Key = tuple[str, str]  # (site UID, charge point identity as received)


class PasswordChecker(Protocol):
    """What authentication needs from storage (the store's `ChargerRepo` satisfies it)."""

    async def verify_password(
        self, site_uid: str, charger_id: str, password: str
    ) -> PasswordCheck: ...


def _shown(text: str, limit: int = 64) -> str:
    """Untrusted text made safe for a log line: printable, and not too long."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "…"


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return "1 minute" if minutes == 1 else f"{minutes} minutes"
    return f"{seconds:g} s"


def parse_basic(authorization: str | None) -> tuple[str, str]:
    """`(user, password)` from an `Authorization: Basic …` value; Refusal(401) otherwise."""
    challenge = (BASIC_CHALLENGE,)
    if authorization is None or not authorization.strip():
        raise Refusal(
            401,
            "charger sent no credentials (HTTP Basic) but the site requires them",
            headers=challenge,
        )
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise Refusal(
            401,
            f"charger sent {_shown(scheme, 20)} credentials but the site requires HTTP Basic",
            headers=challenge,
        )
    try:
        # RFC 7617 leaves the charset open; OCPP identities and passwords are ASCII, and UTF-8
        # is what RFC 7617's charset parameter names.
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    user, colon, password = decoded.partition(":")
    if not colon:
        raise Refusal(
            401,
            "the charger's HTTP Basic credentials are malformed (not base64 of user:password)",
            headers=challenge,
        )
    return user, password


class FailureCounter:
    """Failed authentications per charger within a sliding window, in memory.

    Bounded: at most `max_tracked` chargers are remembered, the stalest dropped first, so that
    a stream of made-up identities cannot grow it without limit.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        clock: Callable[[], float],
        max_tracked: int = 10_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max = max_tracked
        self._failures: dict[Key, deque[float]] = {}

    def _recent(self, key: Key) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        cutoff = self._clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def count(self, key: Key) -> int:
        times = self._recent(key)
        return len(times) if times else 0

    def locked_for(self, key: Key) -> float | None:
        """Seconds until `key` may try again, or None if it may try now."""
        times = self._recent(key)
        if times is None or len(times) < self.limit:
            return None
        # The attempt that would be allowed again is the one `limit` failures back.
        return max(0.0, times[-self.limit] + self.window - self._clock())

    def failed(self, key: Key) -> None:
        times = self._failures.pop(key, None) or deque(maxlen=self.limit)
        times.append(self._clock())
        self._failures[key] = times  # re-inserted: dict order is staleness order
        while len(self._failures) > self._max:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, key: Key) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)


class ChargerAuthenticator:
    """Checks a charger's HTTP Basic credentials; raises `Refusal` (401 or 429) if they fail."""

    def __init__(
        self,
        passwords: PasswordChecker,
        *,
        max_failures: int,
        window: float,
        clock: Callable[[], float],
        max_concurrent: int = 4,
    ) -> None:
        self._passwords = passwords
        self.failures = FailureCounter(max_failures, window, clock)
        # argon2 takes tens of ms of CPU and 64 MiB per check: bound how many run at once so
        # that a burst of handshakes cannot exhaust memory or the default thread pool.
        self._slots = asyncio.Semaphore(max_concurrent)
        # One check at a time per charger, so that concurrent guesses cannot all slip in
        # before the first failures are counted.
        self._locks: dict[Key, tuple[asyncio.Lock, int]] = {}

    async def check(self, site_uid: str, identity: str, authorization: str | None) -> None:
        """Return if the credentials are right for this charger; Refusal otherwise."""
        user, password = parse_basic(authorization)
        key = (site_uid, identity)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                await self._check(key, identity, user, password)
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _check(self, key: Key, identity: str, user: str, password: str) -> None:
        site_uid = key[0]
        wait = self.failures.locked_for(key)
        if wait is not None:
            retry = max(1, math.ceil(wait))
            raise Refusal(
                429,
                f"too many failed authentication attempts for charger {identity}: "
                f"{self.failures.count(key)} in the last {_duration(self.failures.window)}; "
                f"refused without checking for {retry} s more",
                headers=(("Retry-After", str(retry)),),
                answer="too many failed authentication attempts; try again later",
            )
        # The URL carries the identity percent-encoded as received; the Basic user name is
        # plain text.
        if user not in (identity, unquote(identity)):
            self.failures.failed(key)
            raise Refusal(
                401,
                f"user name {_shown(user)} does not match the charger identity {identity}",
                headers=(BASIC_CHALLENGE,),
                answer=_FAILED_ANSWER,
            )
        async with self._slots:
            outcome = await self._passwords.verify_password(site_uid, identity, password)
        if outcome == "not_set":
            # Not counted as a failure: nothing can be guessed while no password exists.
            raise Refusal(
                401,
                "no password set for this charger in HARMON-E",
                headers=(BASIC_CHALLENGE,),
                answer=_FAILED_ANSWER,
            )
        if outcome == "wrong":
            self.failures.failed(key)
            if self.failures.locked_for(key) is not None:
                log.warning(
                    "site=%s charger=%s locked out: %d failed authentications within %s",
                    site_uid,
                    identity,
                    self.failures.limit,
                    _duration(self.failures.window),
                )
            raise Refusal(
                401,
                f"wrong password for charger {identity}",
                headers=(BASIC_CHALLENGE,),
                answer=_FAILED_ANSWER,
            )
        self.failures.succeeded(key)
