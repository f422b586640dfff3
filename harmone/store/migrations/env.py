"""Alembic environment for HARMON-E, asyncio edition.

Two ways in:

* `Store.migrate()` (what `harmone init` and `harmone serve` use) builds the Alembic config in
  code and passes an open connection in `config.attributes["connection"]`; no alembic.ini is
  read, logging is left alone, and the migration runs inside the caller's transaction.
* Developers run the `alembic` command with the top-level alembic.ini; the database URL then
  comes from `-x db=URL` or `sqlalchemy.url` in that file.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection

from harmone.store.db import create_engine
from harmone.store.models import Base

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("db") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("no database: pass -x db=URL or set sqlalchemy.url in alembic.ini")
    return url


def _run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: autogenerate batch operations (copy-and-move),
        # which PostgreSQL runs as plain ALTERs.
        render_as_batch=True,
        compare_type=True,
        # Also on SQLite: harmone.store.db makes SQLAlchemy emit BEGIN itself, so DDL there
        # is transactional too and a failed migration leaves no half-built schema.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone(url: str) -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_on)
            await connection.commit()
    finally:
        await engine.dispose()


def _run_offline(url: str) -> None:
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    shared = config.attributes.get("connection")
    if shared is not None:
        _run_on(shared)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    if context.is_offline_mode():
        _run_offline(_database_url())
    else:
        asyncio.run(_run_standalone(_database_url()))


_main()
