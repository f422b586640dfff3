"""Accounts: users, console sessions and API tokens, and every rule about them.

The REST API, the console and the CLI all go through `Accounts`; none of them touches the
user, session or token repositories. Errors are the package's own: InvalidFields for input that
breaks a rule, Conflict (an e-mail taken, the last admin), NotFound, AuthError; the web layer
maps them to HTTP.

Secrets are stored as hashes only: passwords and token secrets with argon2id, console session
ids (256 random bits) with SHA-256, which is as safe for such ids and cheap on every request.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import re
import secrets
from collections.abc import Collection
from datetime import timedelta

from harmone.clock import utcnow
from harmone.errors import AuthError, Conflict, InvalidFields, NotFound
from harmone.security import (
    MIN_PASSWORD_LENGTH,
    CachedToken,
    TokenCache,
    burn_password_check,
    hash_password,
    new_token,
    parse_token,
    password_needs_rehash,
    verify_password,
    verify_token_secret,
)
from harmone.store.records import ROLES, SiteScope, User, UserAccount
from harmone.store.store import Store

__all__ = [
    "SESSION_TOUCH_INTERVAL",
    "TOKEN_TOUCH_INTERVAL",
    "UNCHANGED",
    "Accounts",
    "Unchanged",
    "check_password",
    "normalise_email",
]

log = logging.getLogger(__name__)

#: last_used_at of a token is written at most this often (each write is a write transaction).
TOKEN_TOUCH_INTERVAL = timedelta(seconds=60)
#: last_seen_at of a console session is written at most this often.
SESSION_TOUCH_INTERVAL = timedelta(seconds=60)

_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")
_AUTH_FAILED = "wrong e-mail or password"
_LAST_ADMIN = "this is the last admin: make another user admin first"
_ADMIN_SITES = "an admin sees every site: site restrictions are for other roles"


class Unchanged(enum.Enum):
    """Marker for "leave this field as it is" where None is a meaningful value."""

    UNCHANGED = enum.auto()


UNCHANGED = Unchanged.UNCHANGED


def normalise_email(email: str) -> str:
    """Lower-cased, stripped e-mail address; InvalidFields if it does not look like one."""
    value = email.strip().lower()
    if len(value) > 320 or not _EMAIL_RE.fullmatch(value):
        raise InvalidFields({"email": f"not an e-mail address: {email!r}"})
    return value


def check_password(password: str) -> None:
    """InvalidFields for a password too short to be worth hashing."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidFields(
            {"password": f"a password needs at least {MIN_PASSWORD_LENGTH} characters"}
        )


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidFields({"role": f"a role is one of {', '.join(ROLES)}, not {role!r}"})


def _session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


class Accounts:
    """Users, their sessions and tokens, over the store's repositories."""

    def __init__(self, store: Store, tokens: TokenCache | None = None) -> None:
        self._users = store.users
        self._sessions = store.sessions
        #: Tokens whose secret was verified lately (argon2 is too slow for every request).
        self._tokens = tokens or TokenCache()

    # -- users --

    async def create_user(self, email: str, password: str, role: str = "operator") -> User:
        """A new user who sees every site; Conflict if the e-mail is taken, ConfigError for
        invalid input."""
        return (await self.create_account(email, password, role)).user

    async def create_account(
        self,
        email: str,
        password: str,
        role: str = "operator",
        sites: Collection[str] | None = None,
    ) -> UserAccount:
        """A new user limited to `sites` (None: every site).

        Conflict if the e-mail is taken; ConfigError for invalid input, an unknown site, or
        sites given for an admin (admins always see every site).
        """
        email = normalise_email(email)
        check_password(password)
        _check_role(role)
        if role == "admin" and sites is not None:
            raise InvalidFields({"sites": _ADMIN_SITES})
        password_hash = await asyncio.to_thread(hash_password, password)
        return await self._users.create(email, password_hash, role, sites)

    async def ensure_admin(self, email: str, password: str) -> tuple[User, bool]:
        """The admin `email`, created if missing; an existing user is left unchanged.

        Returns `(user, created)`. Makes `harmone init` safe to run again.
        """
        email = normalise_email(email)
        existing = await self._users.find_by_email(email)
        if existing is not None:
            return existing, False
        try:
            return await self.create_user(email, password, role="admin"), True
        except Conflict:
            # Another init won the race between our lookup and our insert.
            existing = await self._users.find_by_email(email)
            if existing is None:
                raise
            return existing, False

    async def authenticate(self, email: str, password: str) -> User:
        """The user with this e-mail and password; AuthError otherwise (same message for an
        unknown e-mail and a wrong password, and the same time spent)."""
        found = await self._users.credentials(email.strip().lower())
        if found is None:
            await asyncio.to_thread(burn_password_check, password)
            raise AuthError(_AUTH_FAILED)
        user, password_hash = found
        if not await asyncio.to_thread(verify_password, password_hash, password):
            raise AuthError(_AUTH_FAILED)
        if password_needs_rehash(password_hash):
            new_hash = await asyncio.to_thread(hash_password, password)
            await self._users.replace_password_hash(user.id, new_hash)
        return user

    async def get_user(self, user_id: int) -> User:
        """The user with this id; NotFound otherwise."""
        return await self._users.get(user_id)

    async def list_users(self) -> list[User]:
        """Every user, oldest first."""
        return await self._users.all()

    async def has_admin(self) -> bool:
        """Whether an admin exists: without one, nobody can manage users."""
        return any(user.role == "admin" for user in await self._users.all())

    async def user_sites(self, user_id: int) -> SiteScope:
        """The sites user `user_id` may see: None for every site; NotFound for no such user."""
        return await self._users.scope(user_id)

    async def get_account(self, user_id: int) -> UserAccount:
        """The user `user_id` with their site restriction; NotFound otherwise."""
        return await self._users.account(user_id)

    async def list_accounts(self) -> list[UserAccount]:
        """Every user with their site restriction, oldest first."""
        return await self._users.accounts()

    async def update_account(
        self,
        user_id: int,
        *,
        role: str | Unchanged = UNCHANGED,
        sites: Collection[str] | Unchanged | None = UNCHANGED,
        password: str | Unchanged = UNCHANGED,
        acting: User | None = None,
    ) -> UserAccount:
        """Change a user's role, site restriction (None: every site) or password.

        Becoming an admin lifts any site restriction. A new password ends the user's console
        sessions. NotFound, ConfigError (bad input, unknown site, sites for an admin),
        Conflict (this would leave no admin, or `acting` changing their own role).
        """
        if role is not UNCHANGED:
            _check_role(role)
        password_hash = None
        if password is not UNCHANGED:
            check_password(password)
            password_hash = await asyncio.to_thread(hash_password, password)
        async with self._users.edit(user_id) as edit:
            before = edit.before.user
            new_role = before.role if role is UNCHANGED else role
            if acting is not None and acting.id == user_id and new_role != before.role:
                raise Conflict("you cannot change your own role: ask another admin")
            if new_role == "admin" and sites not in (UNCHANGED, None):
                raise InvalidFields({"sites": _ADMIN_SITES})
            if before.role == "admin" and new_role != "admin" and not await edit.other_admins():
                raise Conflict(_LAST_ADMIN)
            await edit.set_role(new_role)
            if new_role == "admin":
                sites = None
            if sites is not UNCHANGED:
                await edit.set_sites(sites)
            if password_hash is not None:
                await edit.set_password_hash(password_hash)
                await edit.end_sessions()
            account = await edit.after()
        log.info("updated user %s (%s)", account.user.email, account.user.role)
        return account

    async def delete_user(self, user_id: int, *, acting: User | None = None) -> None:
        """Delete a user with their tokens and sessions; NotFound, or Conflict for the last
        admin (HARMON-E must always have someone who can manage users) or for `acting`
        deleting themselves."""
        if acting is not None and acting.id == user_id:
            raise Conflict("you cannot delete your own account: ask another admin")
        async with self._users.edit(user_id) as edit:
            if edit.before.user.role == "admin" and not await edit.other_admins():
                raise Conflict(_LAST_ADMIN)
            await edit.delete()
        log.info("deleted user %s", edit.before.user.email)

    # -- console sessions --

    async def create_session(self, user_id: int, lifetime: timedelta) -> str:
        """A new console session id for `user_id`, valid for at most `lifetime`.

        The id is returned once (for the cookie); only its SHA-256 is stored. Expired
        sessions of every user are swept at the same time. NotFound for no such user.
        """
        session_id = secrets.token_urlsafe(32)
        now = utcnow()
        await self._sessions.create(user_id, _session_hash(session_id), now, now + lifetime)
        return session_id

    async def session_account(self, session_id: str, idle: timedelta) -> UserAccount | None:
        """The user of a live console session, with their site restriction.

        None when the session is unknown, past its lifetime, or unused for longer than
        `idle`. Marks the session as used (at most once a minute: each mark is a write).
        """
        if not session_id or len(session_id) > 128:
            return None
        key = _session_hash(session_id)
        now = utcnow()
        found = await self._sessions.find(key)
        if found is None or found.expires_at <= now or found.last_seen_at + idle <= now:
            return None
        if found.last_seen_at <= now - SESSION_TOUCH_INTERVAL:
            await self._sessions.touch(key, now)
        return UserAccount(found.user, found.sites)

    async def delete_session(self, session_id: str) -> None:
        """End a console session (sign out); unknown ids are ignored."""
        await self._sessions.delete(_session_hash(session_id))

    # -- API tokens --

    async def create_token(self, email: str) -> str:
        """A new API token for the user `email` (shown once: only its hash is stored);
        NotFound for no such user."""
        key = email.strip().lower()
        user = await self._users.find_by_email(key)
        if user is None:
            raise NotFound(f"no user with e-mail {email!r}")
        made = await asyncio.to_thread(new_token)
        await self._sessions.add_token(user.id, made.token_id, made.secret_hash)
        log.info("created an API token %s for %s", made.token_id, key)
        return made.token

    async def user_for_token(self, token: str) -> User | None:
        """The user a token belongs to, or None for a malformed, unknown or wrong token."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        token_id, secret = parsed
        cached = self._tokens.get(token)
        found = await self._sessions.token(
            token_id=token_id, pk=cached.token_pk if cached else None
        )
        if found is None:
            self._tokens.forget(token)  # deleted since it was cached
            return None
        if cached is None:
            if not await asyncio.to_thread(verify_token_secret, found.secret_hash, secret):
                return None
            self._tokens.put(token, CachedToken(token_pk=found.pk, user_id=found.user.id))
        now = utcnow()
        stale = now - TOKEN_TOUCH_INTERVAL
        if found.last_used_at is None or found.last_used_at <= stale:
            await self._sessions.touch_token(found.pk, now, stale)
        return found.user
