"""`Store`: every read and write HARMON-E makes to its database, as async methods.

The store hands out frozen records (`harmone.store.records`), never ORM objects, so callers
cannot lazy-load or mutate rows by accident. Database failures come out as `StoreError`
(or its `NotFound` / `Conflict`), invalid input as `ConfigError`, bad credentials as
`AuthError`.

Concurrency: on SQLite every write transaction starts with BEGIN IMMEDIATE (see
`harmone.store.db`), so writers queue on the busy timeout instead of failing; on PostgreSQL
the upserts (ON CONFLICT) make concurrent registrations of the same charger safe.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import re
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from harmone.clock import utcnow
from harmone.errors import AuthError, ConfigError, Conflict, NotFound, StoreError
from harmone.security import (
    MIN_PASSWORD_LENGTH,
    CachedToken,
    TokenCache,
    burn_password_check,
    charger_password_problem,
    hash_password,
    new_token,
    parse_token,
    password_needs_rehash,
    verify_password,
    verify_token_secret,
)
from harmone.store.db import SQLITE_BEGIN_OPTION, create_engine, describe_url, to_async_url
from harmone.store.models import (
    ApiTokenRow,
    AttemptRow,
    ChargerRow,
    ConnectorRow,
    ConsoleSessionRow,
    SiteRow,
    UserRow,
    UserSiteRow,
)
from harmone.store.records import (
    Attempt,
    Charger,
    ChargerState,
    Connector,
    PasswordCheck,
    Site,
    SiteScope,
    User,
    UserAccount,
)

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["UNCHANGED", "Store", "Unchanged", "alembic_config"]

log = logging.getLogger(__name__)

# Alembic is imported lazily, by the functions that need it, so that this runs first: on
# import, Alembic announces each of its autogenerate plugins at INFO, which is noise in
# `harmone init` output (unless someone configured that logger on purpose).
if logging.getLogger("alembic.runtime.plugins").level == logging.NOTSET:
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Arbitrary constant: PostgreSQL advisory lock held while migrating, so that two `harmone
#: init` / `serve` starting together do not both try to create the schema.
_MIGRATION_LOCK_KEY = 0x4841524D4F4E45  # "HARMONE"
#: last_used_at of a token is written at most this often (each write is a write transaction).
TOKEN_TOUCH_INTERVAL = timedelta(seconds=60)

_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")
_ROLES = ("admin", "operator", "viewer")
_SITE_TYPES = ("cloud", "gateway")
SITE_WRITABLE = frozenset(
    {"name", "type", "gateway_host", "cpms_url", "offline_mode", "charger_auth"}
)
CHARGER_WRITABLE = frozenset({"name", "cpms_url"})
_STATE_FIELDS = (
    "ocpp_version",
    "connected",
    "upstream_connected",
    "last_seen",
    "vendor",
    "model",
    "serial_number",
    "firmware_version",
)
_AUTH_FAILED = "wrong e-mail or password"

#: last_seen_at of a console session is written at most this often.
SESSION_TOUCH_INTERVAL = timedelta(seconds=60)


class Unchanged(enum.Enum):
    """Marker for "leave this field as it is" where None is a meaningful value."""

    UNCHANGED = enum.auto()


UNCHANGED = Unchanged.UNCHANGED


def _session_hash(session_id: str) -> str:
    """What is stored of a console session id: its SHA-256 (the id has 256 random bits, so
    a fast hash is as safe as a slow one, and every request can afford it)."""
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


# Core tables, for the bulk statements that bypass the ORM unit of work.
_CHARGERS = cast(Table, ChargerRow.__table__)
_CONNECTORS = cast(Table, ConnectorRow.__table__)
_ATTEMPTS = cast(Table, AttemptRow.__table__)


def alembic_config() -> Config:
    """The Alembic configuration, built in code: no alembic.ini is needed at run time."""
    from alembic.config import Config

    cfg = Config()
    # configparser interpolates '%': escape it in case the install path contains one.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return cfg


def _upgrade_head(connection: Connection, cfg: Config) -> None:
    from alembic import command

    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _current_heads(connection: Connection) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    return set(MigrationContext.configure(connection).get_current_heads())


def _reason(exc: BaseException) -> str:
    """One line saying what the database (or the network) objected to."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text_ = str(inner).strip().splitlines()
    return text_[0] if text_ else type(inner).__name__


# -- input validation (ConfigError: the caller passed something that cannot be stored) --


def normalise_email(email: str) -> str:
    """Lower-cased, stripped e-mail address; ConfigError if it does not look like one."""
    value = email.strip().lower()
    if len(value) > 320 or not _EMAIL_RE.fullmatch(value):
        raise ConfigError(f"not an e-mail address: {email!r}")
    return value


def check_password(password: str) -> None:
    """ConfigError for a password too short to be worth hashing."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def _name(value: object, what: str, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string")
    value = value.strip()
    if not value:
        if required:
            raise ConfigError(f"{what} must not be empty")
        return None
    if len(value) > 200:
        raise ConfigError(f"{what} is longer than 200 characters")
    return value


def _check_sqlite_directory(url: str) -> None:
    """Refuse an SQLite file in a directory that does not exist, before any driver thread is
    started: the message is clearer, and aiosqlite's failed-connect clean-up (which races with
    the event loop's end) never runs."""
    parsed = make_url(to_async_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return
    if parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return
    directory = Path(parsed.database).expanduser().resolve().parent
    if not directory.is_dir():
        raise StoreError(
            f"cannot open database {describe_url(url)}: the directory {directory} does not exist"
        )


def _site_type(value: object) -> str:
    if value not in _SITE_TYPES:
        raise ConfigError(f"a site type is 'cloud' or 'gateway', not {value!r}")
    return str(value)


def _gateway_host(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError("gateway_host must be a string or null")
    value = value.strip()
    if len(value) > 255 or any(c.isspace() for c in value):
        raise ConfigError(f"not a host name or address: {value!r}")
    return value or None


def _cpms_url(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError("cpms_url must be a string or null")
    value = value.strip()
    if not value:
        return None
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("ws", "wss") or not rest or rest.startswith("/"):
        raise ConfigError(f"a CPMS URL must look like wss://host/path, got {value!r}")
    if len(value) > 2048 or any(c.isspace() for c in value):
        raise ConfigError(f"not a valid CPMS URL: {value!r}")
    return value


def _charger_id(value: str) -> str:
    if not value or len(value) > 255:
        raise ConfigError(f"not a charge point id: {value!r}")
    return value


def _site_values(fields: dict[str, object]) -> dict[str, Any]:
    unknown = set(fields) - SITE_WRITABLE
    if unknown:
        raise ConfigError(
            f"cannot set {', '.join(sorted(unknown))} on a site "
            f"(writable: {', '.join(sorted(SITE_WRITABLE))})"
        )
    checks = {
        "name": lambda v: _name(v, "a site name", required=True),
        "type": _site_type,
        "gateway_host": _gateway_host,
        "cpms_url": _cpms_url,
        "offline_mode": _offline_mode,
        "charger_auth": _charger_auth,
    }
    return {key: checks[key](value) for key, value in fields.items()}


def _charger_auth(value: object) -> bool:
    # Strictly a bool: "false" or 0 switching authentication on or off would be a surprise.
    if not isinstance(value, bool):
        raise ConfigError(f"charger_auth is true or false, not {value!r}")
    return value


def _offline_mode(value: object) -> str:
    if value not in ("hold", "strict"):
        raise ConfigError(f"offline_mode is 'hold' or 'strict', not {value!r}")
    return str(value)


def _charger_values(fields: dict[str, object]) -> dict[str, Any]:
    unknown = set(fields) - CHARGER_WRITABLE
    if unknown:
        raise ConfigError(
            f"cannot set {', '.join(sorted(unknown))} on a charger "
            f"(writable: {', '.join(sorted(CHARGER_WRITABLE))})"
        )
    checks = {
        "name": lambda v: _name(v, "a charger name", required=False),
        "cpms_url": _cpms_url,
    }
    return {key: checks[key](value) for key, value in fields.items()}


class Store:
    """Async access to HARMON-E's database (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Same pool, but write transactions begin IMMEDIATE on SQLite (ignored elsewhere).
        self._write_engine = engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        self._readers = async_sessionmaker(engine, expire_on_commit=False)
        self._writers = async_sessionmaker(self._write_engine, expire_on_commit=False)
        self._tokens = TokenCache()

    # -- lifecycle --------------------------------------------------------------------

    @classmethod
    async def open(cls, url: str) -> Store:
        """Connect to `url` (a contract URL) and check that the database answers.

        Does not migrate: call `migrate()` for that. ConfigError for a URL HARMON-E cannot
        use, StoreError for a database that cannot be reached or opened.
        """
        _check_sqlite_directory(url)
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            raise StoreError(f"cannot open database {describe_url(url)}: {_reason(exc)}") from exc
        log.debug("opened database %s", describe_url(url))
        return cls(engine)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def engine(self) -> AsyncEngine:
        """The underlying engine, for diagnostics and tests; application code uses methods."""
        return self._engine

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (alembic upgrade head); idempotent."""
        cfg = alembic_config()
        try:
            async with self._write_engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                    )
                await conn.run_sync(_upgrade_head, cfg)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"migrating the database failed: {_reason(exc)}") from exc

    async def is_migrated(self) -> bool:
        """Whether the schema is at the newest revision this version of HARMON-E knows."""
        from alembic.script import ScriptDirectory

        heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
        try:
            async with self._engine.connect() as conn:
                current = await conn.run_sync(_current_heads)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot read the schema version: {_reason(exc)}") from exc
        return current == heads

    def transaction(self, *, write: bool = False) -> AbstractAsyncContextManager[AsyncSession]:
        """One transaction for repositories beside the Store (journal, load configuration).

        Writers must say so: on SQLite a write transaction starts with BEGIN IMMEDIATE, so that
        concurrent writers queue instead of failing with "database is locked".
        """
        return self._session(write=write)

    @asynccontextmanager
    async def _session(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """One transaction; database failures become StoreError."""
        maker = self._writers if write else self._readers
        try:
            async with maker() as session, session.begin():
                yield session
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"database error: {_reason(exc)}") from exc

    def _insert(self, table: Table) -> sqlite.Insert | postgresql.Insert:
        """A dialect INSERT that supports ON CONFLICT (both backends spell it the same)."""
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # -- users ------------------------------------------------------------------------

    async def create_user(self, email: str, password: str, role: str = "operator") -> User:
        """A new user; Conflict if the e-mail is taken, ConfigError for invalid input."""
        email = normalise_email(email)
        check_password(password)
        if role not in _ROLES:
            raise ConfigError(f"a role is one of {', '.join(_ROLES)}, not {role!r}")
        password_hash = await asyncio.to_thread(hash_password, password)
        async with self._session(write=True) as session:
            row = UserRow(email=email, password_hash=password_hash, role=role)
            session.add(row)
            try:
                await session.flush()
            except IntegrityError as exc:
                raise Conflict(f"a user with e-mail {email!r} already exists") from exc
            user = row.to_record()
        log.info("created user %s (%s)", email, role)
        return user

    async def _user_by_email(self, email: str) -> User | None:
        async with self._session() as session:
            row = await session.scalar(select(UserRow).where(UserRow.email == email))
            return row.to_record() if row else None

    async def ensure_admin(self, email: str, password: str) -> tuple[User, bool]:
        """The admin `email`, created if missing; an existing user is left unchanged.

        Returns `(user, created)`. Makes `harmone init` safe to run again.
        """
        email = normalise_email(email)
        existing = await self._user_by_email(email)
        if existing is not None:
            return existing, False
        try:
            return await self.create_user(email, password, role="admin"), True
        except Conflict:
            # Another init won the race between our lookup and our insert.
            existing = await self._user_by_email(email)
            if existing is None:
                raise
            return existing, False

    async def authenticate(self, email: str, password: str) -> User:
        """The user with this e-mail and password; AuthError otherwise (same message for an
        unknown e-mail and a wrong password, and the same time spent)."""
        key = email.strip().lower()
        async with self._session() as session:
            row = await session.scalar(select(UserRow).where(UserRow.email == key))
        if row is None:
            await asyncio.to_thread(burn_password_check, password)
            raise AuthError(_AUTH_FAILED)
        if not await asyncio.to_thread(verify_password, row.password_hash, password):
            raise AuthError(_AUTH_FAILED)
        if password_needs_rehash(row.password_hash):
            new_hash = await asyncio.to_thread(hash_password, password)
            async with self._session(write=True) as session:
                await session.execute(
                    update(UserRow).where(UserRow.id == row.id).values(password_hash=new_hash)
                )
        return row.to_record()

    async def get_user(self, user_id: int) -> User:
        """The user with this id; NotFound otherwise."""
        async with self._session() as session:
            row = await session.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            return row.to_record()

    async def list_users(self) -> list[User]:
        """Every user, oldest first."""
        async with self._session() as session:
            rows = await session.scalars(select(UserRow).order_by(UserRow.id))
            return [row.to_record() for row in rows]

    # -- accounts: roles and site restrictions ------------------------------------------

    @staticmethod
    async def _scope(session: AsyncSession, row: UserRow) -> SiteScope:
        if not row.sites_restricted:
            return None
        uids = await session.scalars(
            select(UserSiteRow.site_uid).where(UserSiteRow.user_id == row.id)
        )
        return frozenset(uids)

    @staticmethod
    async def _check_sites(session: AsyncSession, sites: Collection[str]) -> frozenset[str]:
        wanted = frozenset(sites)
        if not wanted:
            return wanted
        found = set(await session.scalars(select(SiteRow.uid).where(SiteRow.uid.in_(wanted))))
        missing = sorted(wanted - found)
        if missing:
            raise ConfigError(f"no site {', '.join(repr(m) for m in missing)}")
        return wanted

    @staticmethod
    async def _admins_left_without(session: AsyncSession, user_id: int) -> int:
        count = await session.scalar(
            select(func.count())
            .select_from(UserRow)
            .where(UserRow.role == "admin", UserRow.id != user_id)
        )
        return int(count or 0)

    async def user_sites(self, user_id: int) -> SiteScope:
        """The sites user `user_id` may see: None for every site; NotFound for no such user."""
        async with self._session() as session:
            row = await session.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            return await self._scope(session, row)

    async def get_account(self, user_id: int) -> UserAccount:
        """The user `user_id` with their site restriction; NotFound otherwise."""
        async with self._session() as session:
            row = await session.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            return UserAccount(row.to_record(), await self._scope(session, row))

    async def list_accounts(self) -> list[UserAccount]:
        """Every user with their site restriction, oldest first (two queries)."""
        async with self._session() as session:
            rows = list(await session.scalars(select(UserRow).order_by(UserRow.id)))
            links = await session.execute(select(UserSiteRow.user_id, UserSiteRow.site_uid))
            by_user: dict[int, set[str]] = defaultdict(set)
            for user_id, site_uid in links:
                by_user[user_id].add(site_uid)
            return [
                UserAccount(
                    row.to_record(),
                    frozenset(by_user.get(row.id, ())) if row.sites_restricted else None,
                )
                for row in rows
            ]

    async def create_account(
        self,
        email: str,
        password: str,
        role: str = "operator",
        sites: Collection[str] | None = None,
    ) -> UserAccount:
        """A new user limited to `sites` (None: every site), in one transaction.

        Conflict if the e-mail is taken; ConfigError for invalid input, an unknown site, or
        sites given for an admin (admins always see every site).
        """
        email = normalise_email(email)
        check_password(password)
        if role not in _ROLES:
            raise ConfigError(f"a role is one of {', '.join(_ROLES)}, not {role!r}")
        if role == "admin" and sites is not None:
            raise ConfigError("an admin sees every site: site restrictions are for other roles")
        password_hash = await asyncio.to_thread(hash_password, password)
        async with self._session(write=True) as session:
            scope = None if sites is None else await self._check_sites(session, sites)
            row = UserRow(
                email=email,
                password_hash=password_hash,
                role=role,
                sites_restricted=scope is not None,
            )
            session.add(row)
            try:
                await session.flush()
            except IntegrityError as exc:
                raise Conflict(f"a user with e-mail {email!r} already exists") from exc
            session.add_all(UserSiteRow(user_id=row.id, site_uid=uid) for uid in scope or ())
            account = UserAccount(row.to_record(), scope)
        log.info("created user %s (%s)", email, role)
        return account

    async def update_account(
        self,
        user_id: int,
        *,
        role: str | Unchanged = UNCHANGED,
        sites: Collection[str] | Unchanged | None = UNCHANGED,
        password: str | Unchanged = UNCHANGED,
    ) -> UserAccount:
        """Change a user's role, site restriction (None: every site) or password.

        Becoming an admin lifts any site restriction. A new password ends the user's console
        sessions. NotFound, ConfigError (bad input, unknown site, sites for an admin),
        Conflict (this would leave no admin).
        """
        if role is not UNCHANGED and role not in _ROLES:
            raise ConfigError(f"a role is one of {', '.join(_ROLES)}, not {role!r}")
        password_hash = None
        if password is not UNCHANGED:
            check_password(password)
            password_hash = await asyncio.to_thread(hash_password, password)
        async with self._session(write=True) as session:
            row = await session.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            new_role = row.role if role is UNCHANGED else role
            if new_role == "admin" and sites not in (UNCHANGED, None):
                raise ConfigError("an admin sees every site: site restrictions are for other roles")
            if (
                row.role == "admin"
                and new_role != "admin"
                and not await self._admins_left_without(session, user_id)
            ):
                raise Conflict("this is the last admin: make another user admin first")
            row.role = new_role
            if new_role == "admin":
                sites = None
            if sites is not UNCHANGED:
                scope = None if sites is None else await self._check_sites(session, sites)
                await session.execute(delete(UserSiteRow).where(UserSiteRow.user_id == user_id))
                session.add_all(UserSiteRow(user_id=user_id, site_uid=uid) for uid in scope or ())
                row.sites_restricted = scope is not None
            if password_hash is not None:
                row.password_hash = password_hash
                await session.execute(
                    delete(ConsoleSessionRow).where(ConsoleSessionRow.user_id == user_id)
                )
            await session.flush()
            account = UserAccount(row.to_record(), await self._scope(session, row))
        log.info("updated user %s (%s)", account.user.email, account.user.role)
        return account

    async def delete_user(self, user_id: int) -> None:
        """Delete a user with their tokens and sessions; NotFound, or Conflict for the last
        admin (HARMON-E must always have someone who can manage users)."""
        async with self._session(write=True) as session:
            row = await session.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            if row.role == "admin" and not await self._admins_left_without(session, user_id):
                raise Conflict("this is the last admin: make another user admin first")
            email = row.email
            # The database cascades to tokens, sessions and site links.
            await session.execute(delete(UserRow).where(UserRow.id == user_id))
        log.info("deleted user %s", email)

    # -- console sessions ---------------------------------------------------------------

    async def create_session(self, user_id: int, lifetime: timedelta) -> str:
        """A new console session id for `user_id`, valid for at most `lifetime`.

        The id is returned once (for the cookie); only its SHA-256 is stored. Expired
        sessions of every user are swept at the same time.
        """
        session_id = secrets.token_urlsafe(32)
        now = utcnow()
        async with self._session(write=True) as session:
            await session.execute(
                delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at <= now)
            )
            session.add(
                ConsoleSessionRow(
                    id_hash=_session_hash(session_id),
                    user_id=user_id,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + lifetime,
                )
            )
            try:
                await session.flush()
            except IntegrityError as exc:
                raise NotFound(f"no user with id {user_id}") from exc
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
        async with self._session() as session:
            found = (
                await session.execute(
                    select(ConsoleSessionRow, UserRow)
                    .join(UserRow, UserRow.id == ConsoleSessionRow.user_id)
                    .where(ConsoleSessionRow.id_hash == key)
                )
            ).one_or_none()
            if found is None:
                return None
            row, user = found
            if row.expires_at <= now or row.last_seen_at + idle <= now:
                return None
            account = UserAccount(user.to_record(), await self._scope(session, user))
            stale = row.last_seen_at <= now - SESSION_TOUCH_INTERVAL
        if stale:
            async with self._session(write=True) as session:
                await session.execute(
                    update(ConsoleSessionRow)
                    .where(ConsoleSessionRow.id_hash == key)
                    .values(last_seen_at=now)
                )
        return account

    async def delete_session(self, session_id: str) -> None:
        """End a console session (log out); unknown ids are ignored."""
        async with self._session(write=True) as session:
            await session.execute(
                delete(ConsoleSessionRow).where(
                    ConsoleSessionRow.id_hash == _session_hash(session_id)
                )
            )

    # -- API tokens -------------------------------------------------------------------

    async def create_token(self, email: str) -> str:
        """A new API token for the user `email` (shown once: only its hash is stored)."""
        key = email.strip().lower()
        user = await self._user_by_email(key)
        if user is None:
            raise NotFound(f"no user with e-mail {email!r}")
        made = await asyncio.to_thread(new_token)
        async with self._session(write=True) as session:
            session.add(
                ApiTokenRow(user_id=user.id, token_id=made.token_id, secret_hash=made.secret_hash)
            )
        log.info("created an API token %s for %s", made.token_id, key)
        return made.token

    async def user_for_token(self, token: str) -> User | None:
        """The user a token belongs to, or None for a malformed, unknown or wrong token."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        token_id, secret = parsed
        cached = self._tokens.get(token)
        query = select(ApiTokenRow, UserRow).join(UserRow, UserRow.id == ApiTokenRow.user_id)
        if cached is not None:
            query = query.where(ApiTokenRow.id == cached.token_pk)
        else:
            query = query.where(ApiTokenRow.token_id == token_id)
        async with self._session() as session:
            found = (await session.execute(query)).one_or_none()
        if found is None or found[0].token_id != token_id:
            self._tokens.forget(token)  # deleted since it was cached
            return None
        row, user = found
        if cached is None:
            if not await asyncio.to_thread(verify_token_secret, row.secret_hash, secret):
                return None
            self._tokens.put(token, CachedToken(token_pk=row.id, user_id=user.id))
        now = utcnow()
        stale = now - TOKEN_TOUCH_INTERVAL
        if row.last_used_at is None or row.last_used_at <= stale:
            async with self._session(write=True) as session:
                await session.execute(
                    update(ApiTokenRow)
                    .where(
                        ApiTokenRow.id == row.id,
                        or_(ApiTokenRow.last_used_at.is_(None), ApiTokenRow.last_used_at <= stale),
                    )
                    .values(last_used_at=now)
                )
        return user.to_record()

    # -- sites ------------------------------------------------------------------------

    async def create_site(
        self,
        name: str,
        type: str,
        gateway_host: str | None = None,
        cpms_url: str | None = None,
        offline_mode: str = "hold",
        charger_auth: bool = False,
    ) -> Site:
        """A new site with a fresh unguessable UID (144 random bits, URL-safe).

        The UID is part of the OCPP URL chargers are given, so it must not be guessable.
        """
        values = _site_values(
            {
                "name": name,
                "type": type,
                "gateway_host": gateway_host,
                "cpms_url": cpms_url,
                "offline_mode": offline_mode,
                "charger_auth": charger_auth,
            }
        )
        uid = secrets.token_urlsafe(18)
        async with self._session(write=True) as session:
            row = SiteRow(uid=uid, **values)
            session.add(row)
            try:
                await session.flush()
            except IntegrityError as exc:  # 144 random bits: only a broken RNG gets here
                raise Conflict(f"site uid {uid} already exists") from exc
            site = row.to_record()
        log.info("created site %s (%s, %s)", uid, site.type, site.name)
        return site

    async def list_sites(self) -> list[Site]:
        """Every site, oldest first."""
        async with self._session() as session:
            rows = await session.scalars(select(SiteRow).order_by(SiteRow.created_at, SiteRow.uid))
            return [row.to_record() for row in rows]

    async def find_site(self, uid: str) -> Site | None:
        """The site `uid`, or None."""
        async with self._session() as session:
            row = await session.get(SiteRow, uid)
            return row.to_record() if row else None

    async def get_site(self, uid: str) -> Site:
        """The site `uid`; NotFound otherwise."""
        site = await self.find_site(uid)
        if site is None:
            raise NotFound(f"no site {uid!r}")
        return site

    async def update_site(self, uid: str, /, **fields: object) -> Site:
        """Change any of name, type, gateway_host, cpms_url; NotFound, ConfigError."""
        values = _site_values(fields)
        async with self._session(write=True) as session:
            row = await session.get(SiteRow, uid)
            if row is None:
                raise NotFound(f"no site {uid!r}")
            for key, value in values.items():
                setattr(row, key, value)
            await session.flush()
            site = row.to_record()
        if values:
            log.info("updated site %s: %s", uid, ", ".join(sorted(values)))
        return site

    async def delete_site(self, uid: str) -> None:
        """Delete a site with its chargers and connectors; its connection attempts stay."""
        async with self._session(write=True) as session:
            row = await session.get(SiteRow, uid)
            if row is None:
                raise NotFound(f"no site {uid!r}")
            # The database cascades to chargers and connectors (ON DELETE CASCADE).
            await session.execute(delete(SiteRow).where(SiteRow.uid == uid))
        log.info("deleted site %s", uid)

    # -- chargers ---------------------------------------------------------------------

    @staticmethod
    async def _connectors(
        session: AsyncSession, site_uid: str, charger_id: str
    ) -> tuple[Connector, ...]:
        rows = await session.scalars(
            select(ConnectorRow)
            .where(ConnectorRow.site_uid == site_uid, ConnectorRow.charger_id == charger_id)
            .order_by(ConnectorRow.connector_id)
        )
        return tuple(row.to_record() for row in rows)

    async def find_charger(self, site_uid: str, charger_id: str) -> Charger | None:
        """The charger `charger_id` of site `site_uid` with its connectors, or None."""
        async with self._session() as session:
            row = await session.get(ChargerRow, (site_uid, charger_id))
            if row is None:
                return None
            return row.to_record(await self._connectors(session, site_uid, charger_id))

    async def get_charger(self, site_uid: str, charger_id: str) -> Charger:
        """Like `find_charger`, but NotFound instead of None."""
        charger = await self.find_charger(site_uid, charger_id)
        if charger is None:
            raise NotFound(f"no charger {charger_id!r} on site {site_uid!r}")
        return charger

    async def list_chargers(self, site_uid: str) -> list[Charger]:
        """The chargers of a site (ordered by id) with their connectors; NotFound for an
        unknown site. Two queries, whatever the number of chargers."""
        async with self._session() as session:
            chargers = list(
                await session.scalars(
                    select(ChargerRow)
                    .where(ChargerRow.site_uid == site_uid)
                    .order_by(ChargerRow.id)
                )
            )
            if not chargers:
                if await session.get(SiteRow, site_uid) is None:
                    raise NotFound(f"no site {site_uid!r}")
                return []
            connectors = await session.scalars(
                select(ConnectorRow)
                .where(ConnectorRow.site_uid == site_uid)
                .order_by(ConnectorRow.charger_id, ConnectorRow.connector_id)
            )
            by_charger: dict[str, list[Connector]] = defaultdict(list)
            for conn in connectors:
                by_charger[conn.charger_id].append(conn.to_record())
            return [row.to_record(tuple(by_charger.get(row.id, ()))) for row in chargers]

    async def charger_counts(self) -> dict[str, int]:
        """The number of chargers of every site that has any, in one query."""
        async with self._session() as session:
            rows = await session.execute(
                select(ChargerRow.site_uid, func.count()).group_by(ChargerRow.site_uid)
            )
            return {site_uid: int(count) for site_uid, count in rows}

    async def register_charger(self, site_uid: str, charger_id: str) -> Charger:
        """The charger, added to its site if new; idempotent and safe to call concurrently.

        NotFound if the site does not exist.
        """
        charger_id = _charger_id(charger_id)
        now = utcnow()
        stmt = (
            self._insert(_CHARGERS)
            .values(
                site_uid=site_uid,
                id=charger_id,
                connected=False,
                upstream_connected=False,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["site_uid", "id"])
        )
        # ON CONFLICT DO NOTHING: of concurrent registrations exactly one inserts and none
        # fails, without a lost race turning into an IntegrityError.
        charger = await self._upsert_charger(stmt, site_uid, charger_id)
        if charger.created_at == now:
            log.info("site=%s charger=%s registered", site_uid, charger_id)
        return charger

    async def _upsert_charger(self, stmt: Any, site_uid: str, charger_id: str) -> Charger:
        """Run an INSERT … ON CONFLICT on the chargers table and read the charger back."""
        async with self._session(write=True) as session:
            try:
                await session.execute(stmt)
            except IntegrityError as exc:  # only the foreign key can fail here
                raise NotFound(f"no site {site_uid!r}") from exc
            row = await session.get(ChargerRow, (site_uid, charger_id))
            if row is None:  # pragma: no cover - the row exists inside this transaction
                raise StoreError(f"charger {charger_id!r} vanished while writing it")
            return row.to_record(await self._connectors(session, site_uid, charger_id))

    async def update_charger(self, site_uid: str, charger_id: str, /, **fields: object) -> Charger:
        """Change a charger's name or cpms_url override; NotFound, ConfigError."""
        values = _charger_values(fields)
        async with self._session(write=True) as session:
            row = await session.get(ChargerRow, (site_uid, charger_id))
            if row is None:
                raise NotFound(f"no charger {charger_id!r} on site {site_uid!r}")
            for key, value in values.items():
                setattr(row, key, value)
            await session.flush()
            charger = row.to_record(await self._connectors(session, site_uid, charger_id))
        if values:
            log.info(
                "site=%s charger=%s updated: %s", site_uid, charger_id, ", ".join(sorted(values))
            )
        return charger

    # -- charger passwords (HTTP Basic, OCPP security profiles 1 and 2) ---------------------

    async def set_charger_password(self, site_uid: str, charger_id: str, password: str) -> Charger:
        """Set or replace a charger's HTTP Basic password; only its argon2id hash is stored.

        A charger that has not connected yet is registered, so that its password can be set
        before it is installed. NotFound for an unknown site, ConfigError for a password
        OCPP does not allow (16 to 40 printable ASCII characters).
        """
        charger_id = _charger_id(charger_id)
        problem = charger_password_problem(password)
        if problem:
            raise ConfigError(problem)
        password_hash = await asyncio.to_thread(hash_password, password)
        now = utcnow()
        insert = self._insert(_CHARGERS).values(
            site_uid=site_uid,
            id=charger_id,
            connected=False,
            upstream_connected=False,
            created_at=now,
            password_hash=password_hash,
        )
        stmt = insert.on_conflict_do_update(
            index_elements=["site_uid", "id"], set_={"password_hash": password_hash}
        )
        charger = await self._upsert_charger(stmt, site_uid, charger_id)
        registered = " (registered)" if charger.created_at == now else ""
        log.info("site=%s charger=%s password set%s", site_uid, charger_id, registered)
        return charger

    async def clear_charger_password(self, site_uid: str, charger_id: str) -> Charger:
        """Forget a charger's password (on a site with charger_auth it can then no longer
        connect); NotFound for an unknown charger."""
        async with self._session(write=True) as session:
            row = await session.get(ChargerRow, (site_uid, charger_id))
            if row is None:
                raise NotFound(f"no charger {charger_id!r} on site {site_uid!r}")
            row.password_hash = None
            await session.flush()
            charger = row.to_record(await self._connectors(session, site_uid, charger_id))
        log.info("site=%s charger=%s password removed", site_uid, charger_id)
        return charger

    async def verify_charger_password(
        self, site_uid: str, charger_id: str, password: str
    ) -> PasswordCheck:
        """Whether `password` is this charger's: "ok", "wrong", or "not_set" (no such charger,
        or no password for it).

        argon2 runs in a thread so that the event loop keeps relaying frames meanwhile.
        """
        async with self._session() as session:
            password_hash = await session.scalar(
                select(ChargerRow.password_hash).where(
                    ChargerRow.site_uid == site_uid, ChargerRow.id == charger_id
                )
            )
        if password_hash is None:
            # No dummy verification here: it would hand anyone who invents identities a way
            # to make HARMON-E burn argon2 time, and identities are not secret anyway.
            return "not_set"
        if not await asyncio.to_thread(verify_password, password_hash, password):
            return "wrong"
        if password_needs_rehash(password_hash):
            new_hash = await asyncio.to_thread(hash_password, password)
            async with self._session(write=True) as session:
                # Only if unchanged meanwhile: a password set in between must win.
                await session.execute(
                    update(ChargerRow)
                    .where(
                        ChargerRow.site_uid == site_uid,
                        ChargerRow.id == charger_id,
                        ChargerRow.password_hash == password_hash,
                    )
                    .values(password_hash=new_hash)
                )
        return "ok"

    async def save_charger_states(self, states: Sequence[ChargerState]) -> None:
        """Persist what the relay learned, in one transaction for the whole batch.

        None fields are left unchanged; later states in the batch win over earlier ones for
        the same charger; unknown chargers are registered; connectors are upserted. States of
        sites that no longer exist are dropped (the site was deleted while it was connected).
        """
        if not states:
            return
        fields: dict[tuple[str, str], dict[str, Any]] = {}
        connectors: dict[tuple[str, str], dict[int, tuple[str, Any]]] = {}
        for state in states:
            key = (state.site_uid, state.charger_id)
            merged = fields.setdefault(key, {})
            for name in _STATE_FIELDS:
                value = getattr(state, name)
                if value is not None:
                    merged[name] = value
            connectors.setdefault(key, {}).update(state.connectors)

        chargers_t = _CHARGERS
        connectors_t = _CONNECTORS
        async with self._session(write=True) as session:
            site_uids = {site_uid for site_uid, _ in fields}
            known = set(
                await session.scalars(select(SiteRow.uid).where(SiteRow.uid.in_(site_uids)))
            )
            for site_uid, charger_id in fields:
                if site_uid not in known:
                    log.warning(
                        "site=%s charger=%s state dropped: no such site", site_uid, charger_id
                    )
            keys = [key for key in fields if key[0] in known]
            if not keys:
                return
            conn = await session.connection()
            now = utcnow()
            await conn.execute(
                self._insert(chargers_t).on_conflict_do_nothing(index_elements=["site_uid", "id"]),
                [
                    {
                        "site_uid": site_uid,
                        "id": charger_id,
                        "connected": False,
                        "upstream_connected": False,
                        "created_at": now,
                    }
                    for site_uid, charger_id in keys
                ],
            )
            # One executemany per distinct set of changed columns: SET lists must match.
            groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
            for key in keys:
                if fields[key]:
                    names = tuple(sorted(fields[key]))
                    groups[names].append({"k_site": key[0], "k_id": key[1], **fields[key]})
            for rows in groups.values():
                await conn.execute(
                    update(chargers_t).where(
                        and_(
                            chargers_t.c.site_uid == bindparam("k_site"),
                            chargers_t.c.id == bindparam("k_id"),
                        )
                    ),
                    rows,
                )
            connector_rows = [
                {
                    "site_uid": key[0],
                    "charger_id": key[1],
                    "connector_id": connector_id,
                    "status": status,
                    "updated_at": at,
                }
                for key in keys
                for connector_id, (status, at) in sorted(connectors[key].items())
            ]
            if connector_rows:
                upsert = self._insert(connectors_t)
                await conn.execute(
                    upsert.on_conflict_do_update(
                        index_elements=["site_uid", "charger_id", "connector_id"],
                        set_={
                            "status": upsert.excluded.status,
                            "updated_at": upsert.excluded.updated_at,
                        },
                    ),
                    connector_rows,
                )

    async def mark_all_disconnected(self) -> None:
        """Set connected and upstream_connected to False everywhere (at server start, no
        connection from a previous run can still be open)."""
        async with self._session(write=True) as session:
            await session.execute(
                update(ChargerRow)
                .where(or_(ChargerRow.connected, ChargerRow.upstream_connected))
                .values(connected=False, upstream_connected=False)
            )

    # -- connection attempts ----------------------------------------------------------

    async def add_attempts(self, attempts: Sequence[Attempt], keep_per_site: int = 1000) -> None:
        """Record attempts in one transaction, then keep only the newest `keep_per_site` of
        each site they concern."""
        if keep_per_site < 1:
            raise ConfigError("keep_per_site must be at least 1")
        if not attempts:
            return
        table = _ATTEMPTS
        rows = [
            {
                "at": a.at,
                "site_uid": a.site_uid,
                "charge_point_id": a.charge_point_id,
                "remote_addr": a.remote_addr,
                "accepted": a.accepted,
                "reason": a.reason,
                "subprotocol": a.subprotocol,
                "offered_subprotocols": ",".join(a.offered_subprotocols),
                "http_status": a.http_status,
            }
            for a in attempts
        ]
        async with self._session(write=True) as session:
            conn = await session.connection()
            await conn.execute(table.insert(), rows)
            for site_uid in sorted({a.site_uid for a in attempts}):
                # The oldest attempt to drop, found through the (site_uid, at) index; then
                # everything at or before it goes.
                cutoff = (
                    await conn.execute(
                        select(table.c.at, table.c.id)
                        .where(table.c.site_uid == site_uid)
                        .order_by(table.c.at.desc(), table.c.id.desc())
                        .offset(keep_per_site)
                        .limit(1)
                    )
                ).first()
                if cutoff is None:
                    continue
                await conn.execute(
                    delete(table).where(
                        table.c.site_uid == site_uid,
                        or_(
                            table.c.at < cutoff.at,
                            and_(table.c.at == cutoff.at, table.c.id <= cutoff.id),
                        ),
                    )
                )

    async def list_attempts(self, site_uid: str, limit: int = 100) -> list[Attempt]:
        """The newest `limit` attempts on a site, newest first."""
        async with self._session() as session:
            rows = await session.scalars(
                select(AttemptRow)
                .where(AttemptRow.site_uid == site_uid)
                .order_by(AttemptRow.at.desc(), AttemptRow.id.desc())
                .limit(max(0, limit))
            )
            return [row.to_record() for row in rows]

    async def list_unknown_site_attempts(self, limit: int = 100) -> list[Attempt]:
        """The newest `limit` attempts whose site UID matches no site, newest first.

        These are chargers configured with a wrong or outdated URL: support needs them.
        """
        no_site = ~exists().where(SiteRow.uid == AttemptRow.site_uid)
        async with self._session() as session:
            rows = await session.scalars(
                select(AttemptRow)
                .where(no_site)
                .order_by(AttemptRow.at.desc(), AttemptRow.id.desc())
                .limit(max(0, limit))
            )
            return [row.to_record() for row in rows]
