"""Persistence: the `Store` and the frozen records it hands out.

`harmone.store.db` maps database URLs to async engines, `models` holds the schema,
`migrations` the Alembic history, `admin` the `harmone init` / `harmone token create` commands.
"""

from __future__ import annotations

from harmone.store.records import (
    Attempt,
    Charger,
    ChargerState,
    Connector,
    Role,
    Site,
    SiteType,
    User,
)
from harmone.store.store import Store

__all__ = [
    "Attempt",
    "Charger",
    "ChargerState",
    "Connector",
    "Role",
    "Site",
    "SiteType",
    "Store",
    "User",
]
