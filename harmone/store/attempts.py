"""The connection log: every attempt of a charger to connect, accepted or refused, kept per
site up to a bound, including attempts on site UIDs that match no site."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, and_, delete, exists, or_, select

from harmone.errors import ConfigError
from harmone.store.db import Database
from harmone.store.models import AttemptRow, SiteRow
from harmone.store.records import Attempt
from harmone.store.rows import record, values

__all__ = ["AttemptRepo"]

_ATTEMPTS = cast(Table, AttemptRow.__table__)


def _attempt(row: AttemptRow) -> Attempt:
    # Comma-joined in the row: WebSocket subprotocol names are tokens without commas.
    offered = tuple(p for p in row.offered_subprotocols.split(",") if p)
    return record(Attempt, row, offered_subprotocols=offered)


class AttemptRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, attempts: Sequence[Attempt], keep_per_site: int = 1000) -> None:
        """Record attempts in one transaction, then keep only the newest `keep_per_site` of
        each site they concern."""
        if keep_per_site < 1:
            raise ConfigError("keep_per_site must be at least 1")
        if not attempts:
            return
        table = _ATTEMPTS
        rows = [values(a, offered_subprotocols=",".join(a.offered_subprotocols)) for a in attempts]
        async with self._db.transaction(write=True) as session:
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

    async def of_site(self, site_uid: str, limit: int = 100) -> list[Attempt]:
        """The newest `limit` attempts on a site, newest first."""
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(AttemptRow)
                .where(AttemptRow.site_uid == site_uid)
                .order_by(AttemptRow.at.desc(), AttemptRow.id.desc())
                .limit(max(0, limit))
            )
            return [_attempt(row) for row in rows]

    async def unknown_sites(self, limit: int = 100) -> list[Attempt]:
        """The newest `limit` attempts whose site UID matches no site, newest first.

        These are chargers configured with a wrong or outdated URL: support needs them.
        """
        no_site = ~exists().where(SiteRow.uid == AttemptRow.site_uid)
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(AttemptRow)
                .where(no_site)
                .order_by(AttemptRow.at.desc(), AttemptRow.id.desc())
                .limit(max(0, limit))
            )
            return [_attempt(row) for row in rows]
