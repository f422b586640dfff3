"""Storage of load-management configurations (one JSON document per site)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from harmone.clock import utcnow
from harmone.store.db import Transactions
from harmone.store.models import LoadConfigRow

__all__ = ["LoadConfigRepo"]


class LoadConfigRepo:
    def __init__(self, store: Transactions) -> None:
        self._store = store

    async def get(self, site_uid: str) -> dict[str, Any] | None:
        async with self._store.transaction() as s:
            row = await s.get(LoadConfigRow, site_uid)
        return None if row is None else dict(json.loads(row.config))

    async def put(self, site_uid: str, config: dict[str, Any]) -> None:
        text = json.dumps(config, sort_keys=True)
        async with self._store.transaction(write=True) as s:
            row = await s.get(LoadConfigRow, site_uid)
            if row is None:
                s.add(LoadConfigRow(site_uid=site_uid, config=text, updated_at=utcnow()))
            else:
                row.config, row.updated_at = text, utcnow()

    async def all(self) -> dict[str, dict[str, Any]]:
        async with self._store.transaction() as s:
            rows = (await s.scalars(select(LoadConfigRow))).all()
        return {r.site_uid: dict(json.loads(r.config)) for r in rows}
