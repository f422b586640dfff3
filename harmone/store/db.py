"""Database URLs and engines: the contract's URLs mapped onto asyncio drivers.

Operators write the URLs they know (`sqlite:///harmone.db`, `postgresql://user@host/db`);
HARMON-E runs on asyncio, so each is mapped to its async driver (aiosqlite, asyncpg) here and
nowhere else.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from harmone.errors import ConfigError

__all__ = ["SQLITE_BEGIN_OPTION", "create_engine", "describe_url", "to_async_url"]

log = logging.getLogger(__name__)

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
