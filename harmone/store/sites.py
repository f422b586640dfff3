"""Sites: created, changed and read back as `harmone.domain.Site` records.

Every write is validated by `harmone.domain.SiteSettings` (ConfigError naming the field), and
the columns written are the settings' own fields: a new site field needs no code here.
"""

from __future__ import annotations

import logging
import math
import secrets
import string

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from harmone.domain import Site, SiteSettings, changed, settings
from harmone.errors import Conflict, NotFound
from harmone.store.db import Database
from harmone.store.models import SiteRow
from harmone.store.rows import record

__all__ = ["SITE_UID_BITS", "SiteRepo", "new_site_uid"]

log = logging.getLogger(__name__)

_ALNUM = string.ascii_letters + string.digits
_URL_SAFE = _ALNUM + "-_"
_UID_LENGTH = 24
#: Randomness of a site UID: 2 letters-or-digits and 22 URL-safe characters (about 143.9).
SITE_UID_BITS = 2 * math.log2(len(_ALNUM)) + (_UID_LENGTH - 2) * math.log2(len(_URL_SAFE))


def new_site_uid() -> str:
    """24 URL-safe characters (A-Z a-z 0-9 - _) from the system's CSPRNG, about 143.9 random
    bits; the first and the last are a letter or a digit, because a UID that starts or ends
    with - or _ is easily misread or mistyped when read out or copied by hand."""
    middle = "".join(secrets.choice(_URL_SAFE) for _ in range(_UID_LENGTH - 2))
    return secrets.choice(_ALNUM) + middle + secrets.choice(_ALNUM)


class SiteRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, type: str, **fields: object) -> Site:
        """A new site with a fresh unguessable UID (`new_site_uid`); InvalidFields for fields
        that break a rule of `SiteSettings`.

        The UID is part of the OCPP URL chargers are given, so it must not be guessable.
        """
        values = settings(SiteSettings, {"name": name, "type": type, **fields}, "site")
        uid = new_site_uid()
        async with self._db.transaction(write=True) as session:
            row = SiteRow(uid=uid, **values.model_dump())
            session.add(row)
            try:
                await session.flush()
            except IntegrityError as exc:  # 143.9 random bits: only a broken RNG gets here
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
