"""Storage of load management's running state (one JSON document per site).

Running transactions, the limits chargers accepted and flags (`SiteLoadState.snapshot`), so that
a restart neither drops cars to 0 A nor grants more than the chargers may already be drawing.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from harmone.clock import utcnow
from harmone.store.db import Transactions
from harmone.store.models import LoadStateRow

__all__ = ["LoadStateRepo"]


class LoadStateRepo:
    def __init__(self, store: Transactions) -> None:
        self._store = store

    async def put(self, site_uid: str, state: dict[str, Any]) -> None:
        text = json.dumps(state, sort_keys=True)
        async with self._store.transaction(write=True) as s:
            row = await s.get(LoadStateRow, site_uid)
            if row is None:
                s.add(LoadStateRow(site_uid=site_uid, state=text, updated_at=utcnow()))
            else:
                row.state, row.updated_at = text, utcnow()

    async def all(self) -> dict[str, dict[str, Any]]:
        async with self._store.transaction() as s:
            rows = (await s.scalars(select(LoadStateRow))).all()
        return {r.site_uid: dict(json.loads(r.state)) for r in rows}
