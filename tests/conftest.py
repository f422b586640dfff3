"""Shared fixtures: an empty database per backend (SQLite file, PostgreSQL), a Store, a running
HARMON-E (`srv`), cheap password hashing in every test (`real_argon2` for the tests about
hashing itself).

The tests are in layers, one folder each: `pure/` (no socket, no database, no process: framing,
the session, typed events, standalone answers, the domain, the package's shape), `relay/` (the
OCPP relay over real sockets on 127.0.0.1, with simulated chargers and CPMS), `loadmgmt/` (the
allocator, load state and plan as tables and properties, the simulation on a manual clock,
meters over real Modbus TCP, and load management end to end), `api/` (the REST API, the
console over HTTP, services, storage on SQLite and PostgreSQL, the CLI) and `browser/` (the
console in Chromium). Helpers they share are the modules next to this file (`support`,
`console_support`, `modbus_meter`, `browser_support`, `loadsim`, `call_ledger`, `certs`).

`db_url` is parametrized over both backends and is always an *empty* database (no schema):
a fresh file for SQLite; for PostgreSQL one database per test session whose `public` schema
is dropped and recreated before each test. PostgreSQL tests are skipped when no server
answers at $HARMONE_TEST_PG (default postgresql://postgres@127.0.0.1:5432/test), unless the
run is strict (`support.strict_run`: $HARMONE_TEST_STRICT=1, or $CI set), in which case they
fail.

Every test also fails when one of its peers failed where nothing awaits it (`swallowed_errors`):
a fake CPMS's connection handler that raised (websockets only logs it and closes the
connection), or an exception asyncio could only log (a `start_server` callback, a task nobody
awaited).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator, Coroutine, Generator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
import pytest_asyncio
from console_support import cheap_passwords
from sqlalchemy.engine import make_url
from support import client_for, harmone_server, strict_run

from harmone import security
from harmone.store import Store
from harmone.web.serve import RunningServer

#: The hasher HARMON-E uses, captured before any test makes hashing cheap.
PRODUCTION_HASHER = security._hasher

T = TypeVar("T")

PG_SERVER_URL = os.environ.get("HARMONE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on a private event loop in a worker thread.

    Sync fixtures use this so that they never touch the event loops pytest-asyncio manages.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _pg_dsn(url: str) -> str:
    """asyncpg's spelling of a postgresql:// URL (it does not know `+asyncpg`)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _create_database(name: str) -> None:
    conn = await asyncpg.connect(_pg_dsn(PG_SERVER_URL), timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(_pg_dsn(PG_SERVER_URL), timeout=5)
    try:
        # A test that failed half-way may have left connections open; DROP would refuse.
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()


async def _reset_schema(url: str) -> None:
    conn = await asyncpg.connect(_pg_dsn(url), timeout=5)
    try:
        # Fail rather than hang if an earlier test left a connection holding locks.
        await conn.execute("SET lock_timeout = '10s'")
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        await conn.execute("CREATE SCHEMA public")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh, uniquely named PostgreSQL database, dropped after the session."""
    name = f"harmone_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        run_async(_create_database(name))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL not available at {PG_SERVER_URL}: {exc}"
        if strict_run():
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield make_url(PG_SERVER_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        run_async(_drop_database(name))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite database file (not created yet) under the test's tmp_path."""
    return f"sqlite:///{tmp_path / 'harmone.db'}"


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty database (no schema yet) on each backend."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
        return url
    url = request.getfixturevalue("pg_url")
    run_async(_reset_schema(url))
    return url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """A Store on `db_url`, migrated, closed after the test."""
    opened = await Store.open(db_url)
    try:
        await opened.migrate()
        yield opened
    finally:
        await opened.close()


# -- a running HARMON-E -------------------------------------------------------------------------


@pytest.fixture
async def srv(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningServer]:
    """HARMON-E serving on 127.0.0.1 (a free port) with a fresh SQLite file in `tmp_path`.

    A test module that needs other settings sets `SERVER_OPTIONS`, the keyword arguments of
    `support.harmone_server` (e.g. `{"public_url": "wss://ocpp.example.com"}`).
    """
    options: Mapping[str, Any] = getattr(request.module, "SERVER_OPTIONS", {})
    async with harmone_server(tmp_path, **options) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningServer]:
    """One HARMON-E for the tests of a module that cannot disturb each other (tables of bad
    input, each test with its own site): starting and stopping one costs ~0.3 s. Such tests run
    in the module's event loop (`support.ON_SHARED_SERVER`); `SERVER_OPTIONS` apply as for
    `srv`."""
    options: Mapping[str, Any] = getattr(request.module, "SERVER_OPTIONS", {})
    async with harmone_server(tmp_path_factory.mktemp("shared_srv"), **options) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_admin(shared_srv: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """A REST client of an admin of `shared_srv` (`shared-admin@example.com`)."""
    async with await client_for(shared_srv, "admin", "shared-admin@example.com") as client:
        yield client


@pytest.fixture(scope="session", autouse=True)
def cheap_argon2_everywhere() -> Iterator[None]:
    """Argon2 at its lowest cost in every test (`console_support.cheap_passwords`): each check
    at the production parameters costs ~0.3 s of CPU, and the suite signs in hundreds of times.
    The tests about password hashing itself ask for `real_argon2`.
    """
    with cheap_passwords():
        yield


@pytest.fixture(scope="module")
def cheap_argon2() -> Iterator[None]:
    """Argon2 at its lowest cost for a whole module; kept for modules that say
    `pytestmark = pytest.mark.usefixtures("cheap_argon2")` (every test is cheap already)."""
    with cheap_passwords():
        yield


@pytest.fixture
def real_argon2() -> Iterator[None]:
    """Argon2 at the production parameters (RFC 9106's defaults) for one test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(security, "_hasher", PRODUCTION_HASHER)
        security._dummy_hash.cache_clear()
        try:
            yield
        finally:
            security._dummy_hash.cache_clear()


# -- failures in peers fail the test ------------------------------------------------------------

#: Where an exception ends up when it happens in a task that nobody awaits: a websockets server
#: logs its connection handler's exception and closes the connection; asyncio logs one from a
#: `start_server` callback or a task whose result nobody retrieved.
SWALLOWING_LOGGERS = ("websockets.server", "asyncio")


def _sqlalchemy_close_abandoned(record: logging.LogRecord) -> bool:
    """SQLAlchemy's own cleanup, not a peer failing: when a request is cancelled while its
    database connection is being invalidated (a console event stream closed by the browser),
    SQLAlchemy closes the aiosqlite connection in a task it shields and keeps no reference to
    (`AsyncAdapt_terminate.terminate`, sqlalchemy/connectors/asyncio.py); when the cancellation
    reaches it again, asyncio may collect that task while pending and log it. Only that exact
    task is let through; every other "Task was destroyed" still fails the test."""
    message = record.getMessage()
    return (
        record.name == "asyncio"
        and message.startswith("Task was destroyed but it is pending!")
        and "AsyncAdapt_aiosqlite_connection._terminate_graceful_close()" in message
    )


class SwallowedErrors(logging.Handler):
    """Collects the errors `SWALLOWING_LOGGERS` log during one test."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if _sqlalchemy_close_abandoned(record):
            return
        self.records.append(record)

    def take(self) -> str | None:
        """What was logged since the last call, with tracebacks; None if nothing."""
        records, self.records = self.records, []
        if not records:
            return None
        formatter = logging.Formatter("%(name)s: %(message)s")
        return "\n".join(formatter.format(r) for r in records)


@pytest.fixture(autouse=True)
def swallowed_errors() -> Iterator[SwallowedErrors]:
    """Fails the test when a peer (a fake CPMS, a fake meter, a background task) failed."""
    handler = SwallowedErrors()
    loggers = [logging.getLogger(name) for name in SWALLOWING_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    # what only went wrong while the test's fixtures were torn down
    if (errors := handler.take()) is not None:
        pytest.fail(f"a peer of this test failed during teardown:\n{errors}", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    handler = getattr(item, "funcargs", {}).get("swallowed_errors")
    if not isinstance(handler, SwallowedErrors):
        return (yield)
    try:
        result = yield
    except BaseException:
        # the test failed anyway: its peers' errors go with its report, they may be the cause
        if (errors := handler.take()) is not None:
            item.add_report_section("call", "errors in peers", errors)
        raise
    if (errors := handler.take()) is not None:
        pytest.fail(f"a peer of this test failed:\n{errors}", pytrace=False)
    return result
