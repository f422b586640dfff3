"""Passwords and API tokens.

Passwords are stored as argon2id hashes (argon2-cffi's RFC 9106 defaults). API tokens look like
``hm_<token id>_<secret>``: the token id (64 random bits, hex) is stored in clear to find the
row, the secret (256 random bits) only as an argon2id hash, so that a copy of the database does
not let anyone use the API.

Everything here is synchronous and CPU-bound on purpose (argon2 costs ~50-100 ms); async
callers run it in a thread (`asyncio.to_thread`) so that the event loop keeps relaying frames.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "CHARGER_PASSWORD_LENGTHS",
    "MIN_PASSWORD_LENGTH",
    "TOKEN_PREFIX",
    "CachedToken",
    "NewToken",
    "TokenCache",
    "burn_password_check",
    "charger_password_problem",
    "hash_password",
    "new_token",
    "parse_token",
    "password_needs_rehash",
    "verify_password",
    "verify_token_secret",
]

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 8
TOKEN_PREFIX = "hm_"
_TOKEN_ID_BYTES = 8  # 64 bits: only needs to be unique, it is not a secret
_TOKEN_SECRET_BYTES = 32  # 256 bits of secret
_TOKEN_RE = re.compile(r"hm_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})")

_hasher = PasswordHasher()

#: A charger's HTTP Basic password (OCPP security profiles 1 and 2): OCPP 2.0.1's
#: BasicAuthPassword is a passwordString of 16 to 40 characters, and a 1.6 AuthorizationKey
#: (16 to 20 bytes, written as hex) fits the same range.
CHARGER_PASSWORD_LENGTHS = (16, 40)


def hash_password(password: str) -> str:
    """The argon2id PHC string of `password`."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches `password_hash`; False (not an exception) on any mismatch."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    """Whether a hash was made with weaker parameters than today's and should be replaced."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def charger_password_problem(password: str) -> str | None:
    """Why `password` cannot be a charger's password, or None if it can.

    Printable ASCII only: chargers take the password from a configuration key or a local UI,
    and anything else is encoded differently by different firmwares in the Basic header.
    """
    low, high = CHARGER_PASSWORD_LENGTHS
    if not low <= len(password) <= high:
        return (
            f"a charger password has {low} to {high} characters "
            f"(OCPP BasicAuthPassword), not {len(password)}"
        )
    if any(not 0x20 <= ord(c) <= 0x7E for c in password):
        return "a charger password may contain only printable ASCII characters"
    return None


@cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def burn_password_check(password: str) -> None:
    """Spend the time of one verification, so an unknown e-mail answers as slowly as a known
    one with a wrong password (no user enumeration by timing)."""
    verify_password(_dummy_hash(), password)


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly made token: `token` is shown once to the user, the rest is stored."""

    token: str
    token_id: str
    secret_hash: str


def new_token() -> NewToken:
    """Make a token `hm_<id>_<secret>` and the argon2id hash of its secret."""
    token_id = secrets.token_hex(_TOKEN_ID_BYTES)
    secret = secrets.token_urlsafe(_TOKEN_SECRET_BYTES)
    return NewToken(
        token=f"{TOKEN_PREFIX}{token_id}_{secret}",
        token_id=token_id,
        secret_hash=_hasher.hash(secret),
    )


def parse_token(token: str) -> tuple[str, str] | None:
    """`(token_id, secret)` of a well-formed token, None for anything else."""
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        return None
    return match["id"], match["secret"]


def verify_token_secret(secret_hash: str, secret: str) -> bool:
    """Whether `secret` matches the stored hash of a token's secret."""
    return verify_password(secret_hash, secret)


@dataclass(frozen=True, slots=True)
class CachedToken:
    """What a verified token resolved to: the token row and its user."""

    token_pk: int
    user_id: int


class TokenCache:
    """Remembers, for `ttl` seconds, tokens whose secret was already verified.

    Why: every API request carries its token, and argon2 is deliberately slow (tens of ms of
    CPU and 64 MiB per check). Verifying on each request would cap the API at a few dozen
    requests per second per core and stall the event loop's thread pool. The cache is keyed by
    sha256 of the whole token, so neither the token nor anything that verifies a guess more
    cheaply than the token itself is kept; a 256-bit secret makes sha256 as safe as argon2
    here. Entries expire quickly and the caller still checks that the token row exists on each
    use, so deleting a token takes effect at once; the TTL only bounds how long a secret stays
    "known good" in memory. Failures are never cached: a wrong token always costs a full check.
    """

    def __init__(
        self,
        ttl: float = 60.0,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: dict[bytes, tuple[float, CachedToken]] = {}

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8")).digest()

    def get(self, token: str) -> CachedToken | None:
        """The cached resolution of `token`, or None if absent or expired."""
        key = self._key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        return value

    def put(self, token: str, value: CachedToken) -> None:
        """Remember a token whose secret was just verified."""
        if len(self._entries) >= self._max:
            now = self._clock()
            for key in [k for k, (exp, _) in self._entries.items() if exp <= now]:
                del self._entries[key]
            # Still full: drop the oldest insertions (dicts keep insertion order).
            while len(self._entries) >= self._max:
                del self._entries[next(iter(self._entries))]
        self._entries[self._key(token)] = (self._clock() + self._ttl, value)

    def forget(self, token: str) -> None:
        self._entries.pop(self._key(token), None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
