"""Persistence: the `Store`, its repositories (one module per concern) and the frozen records
they hand out.

`db` holds the engine, transactions and migrations, `models` the schema, `migrations` the
Alembic history; `users`, `sessions`, `sites`, `chargers`, `attempts`, `journal` and
`loadconfig` are the repositories the `Store` exposes as attributes.
"""

from __future__ import annotations

from harmone.store.records import (
    Attempt,
    Charger,
    ChargerIdentity,
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
    "ChargerIdentity",
    "ChargerState",
    "Connector",
    "Role",
    "Site",
    "SiteType",
    "Store",
    "User",
]
