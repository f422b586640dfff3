"""Sites: created, changed and read back as `harmone.domain.Site` records.

Every write is validated by `harmone.domain.SiteSettings` (ConfigError naming the field), and
the columns written are the settings' own fields: a new site field needs no code here.
"""

from __future__ import annotations

import logging
import secrets

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from harmone.domain import Site, SiteSettings, changed, settings
from harmone.errors import Conflict, NotFound
from harmone.store.db import Database
from harmone.store.models import SiteRow
from harmone.store.rows import record

__all__ = ["SiteRepo"]

log = logging.getLogger(__name__)


class SiteRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, type: str, **fields: object) -> Site:
        """A new site with a fresh unguessable UID (144 random bits, URL-safe); ConfigError
        for fields that break a rule of `SiteSettings`.

        The UID is part of the OCPP URL chargers are given, so it must not be guessable.
        """
        values = settings(SiteSettings, {"name": name, "type": type, **fields}, "site")
        uid = secrets.token_urlsafe(18)
        async with self._db.transaction(write=True) as session:
            row = SiteRow(uid=uid, **values.model_dump())
            session.add(row)
            try:
                await session.flush()
            except IntegrityError as exc:  # 144 random bits: only a broken RNG gets here
                raise Conflict(f"site uid {uid} already exists") from exc
            site = record(Site, row)
        log.info("created site %s (%s, %s)", uid, site.type, site.name)
        return site

    async def all(self) -> list[Site]:
        """Every site, oldest first."""
        async with self._db.transaction() as session:
            rows = await session.scalars(select(SiteRow).order_by(SiteRow.created_at, SiteRow.uid))
            return [record(Site, row) for row in rows]

    async def find(self, uid: str) -> Site | None:
        """The site `uid`, or None."""
        async with self._db.transaction() as session:
            row = await session.get(SiteRow, uid)
            return record(Site, row) if row else None

    async def get(self, uid: str) -> Site:
        """The site `uid`; NotFound otherwise."""
        site = await self.find(uid)
        if site is None:
            raise NotFound(f"no site {uid!r}")
        return site

    async def update(self, uid: str, /, **changes: object) -> Site:
        """Change any writable field; the site as a whole must still satisfy the rules (a
        gateway site keeps a gateway_host). NotFound, ConfigError."""
        async with self._db.transaction(write=True) as session:
            row = await session.get(SiteRow, uid)
            if row is None:
                raise NotFound(f"no site {uid!r}")
            current = record(SiteSettings, row)
            after = changed(current, changes, "site") if changes else current
            for name in changes:
                setattr(row, name, getattr(after, name))
            await session.flush()
            site = record(Site, row)
        if changes:
            log.info("updated site %s: %s", uid, ", ".join(sorted(changes)))
        return site

    async def delete(self, uid: str) -> None:
        """Delete a site with its chargers and connectors; its connection attempts stay."""
        async with self._db.transaction(write=True) as session:
            row = await session.get(SiteRow, uid)
            if row is None:
                raise NotFound(f"no site {uid!r}")
            # The database cascades to chargers and connectors (ON DELETE CASCADE).
            await session.execute(delete(SiteRow).where(SiteRow.uid == uid))
        log.info("deleted site %s", uid)
