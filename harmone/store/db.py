"""Database URLs, engines, transactions and migrations.

Operators write the URLs they know (`sqlite:///harmone.db`, `postgresql://user@host/db`);
HARMON-E runs on asyncio, so each is mapped to its async driver (aiosqlite, asyncpg) here and
nowhere else. `Database` owns the engine: every repository of `harmone.store` runs its
statements in `Database.transaction()`, and `Database.migrate()` applies the Alembic history.

Concurrency: on SQLite every write transaction starts with BEGIN IMMEDIATE (see
`create_engine`), so writers queue on the busy timeout instead of failing; on PostgreSQL the
upserts (ON CONFLICT, `Database.insert`) make concurrent writes of the same row safe.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from harmone.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "SQLITE_BEGIN_OPTION",
    "Database",
    "Transactions",
    "alembic_config",
    "create_engine",
    "describe_url",
    "reason",
    "to_async_url",
]

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

#: Execution option naming the BEGIN mode for SQLite ("IMMEDIATE" for write transactions).
SQLITE_BEGIN_OPTION = "harmone_sqlite_begin"

#: How long a SQLite connection waits for another writer before failing, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 10_000

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def _parse(url: str) -> URL:
    try:
        return make_url(url.strip())
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(
            f"not a database URL: {url!r} (expected sqlite:///path.db or postgresql://user@host/db)"
        ) from exc


def to_async_url(url: str) -> str:
    """Map a contract database URL to the same database on its asyncio driver.

    `sqlite:///x.db` -> `sqlite+aiosqlite:///x.db`; `postgresql://` and `postgres://` ->
    `postgresql+asyncpg://`; URLs already naming those drivers pass through. Anything else is
    a ConfigError, because no other driver is installed or tested.
    """
    parsed = _parse(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ConfigError(
            f"unsupported database URL scheme {parsed.drivername!r} in "
            f"{parsed.render_as_string(hide_password=True)!r}: use sqlite:///path.db or "
            "postgresql://user@host/db"
        )
    if driver.startswith("sqlite") and (parsed.host or parsed.port or parsed.username):
        # sqlite://host/x.db is a classic typo for sqlite:///x.db (three slashes).
        raise ConfigError(
            f"a SQLite URL has no host: write sqlite:///relative.db or sqlite:////abs/path.db, "
            f"got {url!r}"
        )
    if driver.startswith("postgresql") and not parsed.database:
        raise ConfigError(f"a PostgreSQL URL must name a database: {url!r}")
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def describe_url(url: str) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable URL>"


def _is_memory_sqlite(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or "mode=memory" in str(url)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An AsyncEngine for a contract URL, with the SQLite settings HARMON-E relies on.

    On SQLite: WAL (readers never block the writer and vice versa), foreign keys enforced
    (ON DELETE CASCADE depends on it), a busy timeout so that concurrent writers queue instead
    of failing, and real transactions (see `_sqlite_begin`).
    """
    async_url = make_url(to_async_url(url))
    if async_url.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(async_url, **kwargs)

    connect_args = dict(kwargs.pop("connect_args", {}))
    # Disable the sqlite3 module's own (legacy) transaction handling: it skips BEGIN before
    # SELECT and DDL, which makes migrations non-transactional. SQLAlchemy emits BEGIN instead.
    connect_args.setdefault("isolation_level", None)
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    engine = create_async_engine(async_url, connect_args=connect_args, **kwargs)
    memory = _is_memory_sqlite(async_url)

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
            # WAL with synchronous=NORMAL stays consistent after a crash and only risks the
            # last transactions on power loss; FULL would fsync on every relay state batch.
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:
        # Write transactions start with BEGIN IMMEDIATE so that they take the write lock up
        # front (and wait for it via busy_timeout). A deferred transaction that reads first
        # and writes later can instead fail at once with SQLITE_BUSY when another connection
        # committed in between, which busy_timeout cannot help with.
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            raise ValueError(f"bad {SQLITE_BEGIN_OPTION}: {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def reason(exc: BaseException) -> str:
    """One line saying what the database (or the network) objected to."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text_ = str(inner).strip().splitlines()
    return text_[0] if text_ else type(inner).__name__


def check_sqlite_directory(url: str) -> None:
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


class Transactions(Protocol):
    """Where a repository gets its transactions (a `Database`, or the `Store` that owns one)."""

    def transaction(self, *, write: bool = False) -> AbstractAsyncContextManager[AsyncSession]: ...


class Database:
    """An engine with HARMON-E's transactions: what every repository is built on."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # Same pool, but write transactions begin IMMEDIATE on SQLite (ignored elsewhere).
        self._write_engine = engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        self._readers = async_sessionmaker(engine, expire_on_commit=False)
        self._writers = async_sessionmaker(self._write_engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str) -> Database:
        """Connect to `url` (a contract URL) and check that the database answers.

        ConfigError for a URL HARMON-E cannot use, StoreError for a database that cannot be
        reached or opened.
        """
        check_sqlite_directory(url)
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            raise StoreError(f"cannot open database {describe_url(url)}: {reason(exc)}") from exc
        log.debug("opened database %s", describe_url(url))
        return cls(engine)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    def transaction(self, *, write: bool = False) -> AbstractAsyncContextManager[AsyncSession]:
        """One transaction; database failures come out as StoreError.

        Writers must say so: on SQLite a write transaction starts with BEGIN IMMEDIATE, so that
        concurrent writers queue instead of failing with "database is locked".
        """
        return self._transaction(write=write)

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[AsyncSession]:
        maker = self._writers if write else self._readers
        try:
            async with maker() as session, session.begin():
                yield session
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"database error: {reason(exc)}") from exc

    def insert(self, table: Table) -> sqlite.Insert | postgresql.Insert:
        """A dialect INSERT that supports ON CONFLICT (both backends spell it the same)."""
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

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
            raise StoreError(f"migrating the database failed: {reason(exc)}") from exc

    async def is_migrated(self) -> bool:
        """Whether the schema is at the newest revision this version of HARMON-E knows."""
        from alembic.script import ScriptDirectory

        heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
        try:
            async with self.engine.connect() as conn:
                current = await conn.run_sync(_current_heads)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot read the schema version: {reason(exc)}") from exc
        return current == heads
