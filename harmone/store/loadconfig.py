"""Storage of load-management configurations (one JSON document per site)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker

from harmone.clock import utcnow
from harmone.errors import StoreError
from harmone.store.models import LoadConfigRow
from harmone.store.store import Store

__all__ = ["LoadConfigRepo"]


class LoadConfigRepo:
    def __init__(self, store: Store) -> None:
        self._sessions = async_sessionmaker(store.engine, expire_on_commit=False)

    async def get(self, site_uid: str) -> dict[str, Any] | None:
        try:
            async with self._sessions() as s:
                row = await s.get(LoadConfigRow, site_uid)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"database error: {exc}") from exc
        return None if row is None else dict(json.loads(row.config))

    async def put(self, site_uid: str, config: dict[str, Any]) -> None:
        text = json.dumps(config, sort_keys=True)
        try:
            async with self._sessions() as s, s.begin():
                row = await s.get(LoadConfigRow, site_uid)
                if row is None:
                    s.add(LoadConfigRow(site_uid=site_uid, config=text, updated_at=utcnow()))
                else:
                    row.config, row.updated_at = text, utcnow()
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"database error: {exc}") from exc

    async def all(self) -> dict[str, dict[str, Any]]:
        try:
            async with self._sessions() as s:
                rows = (await s.scalars(select(LoadConfigRow))).all()
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"database error: {exc}") from exc
        return {r.site_uid: dict(json.loads(r.config)) for r in rows}
