"""`Store`: the database and its repositories, one per concern.

Callers say what they use: `store.sites.create(...)`, `store.chargers.find(...)`,
`store.users`, `store.sessions`, `store.attempts`, `store.journal`, `store.loadconfig`,
`store.loadstate`.
Every repository hands out frozen records, never ORM objects, so callers cannot lazy-load or
mutate rows by accident. Database failures come out as `StoreError` (or its `NotFound` /
`Conflict`), input that breaks a rule as `ConfigError`. Rules about users, sessions and tokens
live in `harmone.services.accounts`, rules about site and charger fields in `harmone.domain`.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from harmone.store.attempts import AttemptRepo
from harmone.store.box import BoxRepo
from harmone.store.chargers import ChargerRepo
from harmone.store.db import Database
from harmone.store.gateways import GatewayRepo
from harmone.store.journal import JournalRepo
from harmone.store.loadconfig import LoadConfigRepo
from harmone.store.loadstate import LoadStateRepo
from harmone.store.sessions import SessionRepo
from harmone.store.sites import SiteRepo
from harmone.store.users import UserRepo

__all__ = ["Store"]


class Store:
    """HARMON-E's database (SQLite or PostgreSQL) and a repository for each concern."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.db = Database(engine)
        self.users = UserRepo(self.db)
        self.sessions = SessionRepo(self.db)
        self.sites = SiteRepo(self.db)
        self.chargers = ChargerRepo(self.db)
        self.attempts = AttemptRepo(self.db)
        self.journal = JournalRepo(self.db)
        self.loadconfig = LoadConfigRepo(self.db)
        self.loadstate = LoadStateRepo(self.db)
        #: Gateway sites (issue 12): the cloud's paired boxes, and a box's own identity,
        #: cached configuration and outbox.
        self.gateways = GatewayRepo(self.db)
        self.box = BoxRepo(self.db)

    @classmethod
    async def open(cls, url: str) -> Store:
        """Connect to `url` (a contract URL) and check that the database answers.

        Does not migrate: call `migrate()` for that. ConfigError for a URL HARMON-E cannot
        use, StoreError for a database that cannot be reached or opened.
        """
        return cls((await Database.open(url)).engine)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.db.close()

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
        """The underlying engine, for diagnostics and tests; application code uses repositories."""
        return self.db.engine

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (alembic upgrade head); idempotent."""
        await self.db.migrate()

    async def is_migrated(self) -> bool:
        """Whether the schema is at the newest revision this version of HARMON-E knows."""
        return await self.db.is_migrated()

    def transaction(self, *, write: bool = False) -> AbstractAsyncContextManager[AsyncSession]:
        """One transaction, for repositories built beside the Store (`db.Transactions`)."""
        return self.db.transaction(write=write)
