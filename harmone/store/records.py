"""Plain, frozen records the store hands out (never live ORM objects).

Sites and chargers are declared with their rules in `harmone.domain` and re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from harmone.domain import Charger, ChargerIdentity, Connector, OfflineMode, Site, SiteType

__all__ = [
    "ROLES",
    "Attempt",
    "Charger",
    "ChargerIdentity",
    "ChargerState",
    "Connector",
    "OfflineMode",
    "PasswordCheck",
    "Role",
    "Site",
    "SiteScope",
    "SiteType",
    "User",
    "UserAccount",
]

Role = Literal["admin", "operator", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "operator", "viewer")
#: The outcome of checking a charger's HTTP Basic password.
PasswordCheck = Literal["ok", "wrong", "not_set"]


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    role: Role
    created_at: datetime


#: The sites a user may see: None means every site (admins, unrestricted users); a frozenset
#: (possibly empty) means only those.
SiteScope = frozenset[str] | None


@dataclass(frozen=True, slots=True)
class UserAccount:
    """A user with the sites they are limited to (`sites` None: every site)."""

    user: User
    sites: SiteScope


@dataclass(frozen=True, slots=True)
class ChargerState:
    """What the relay learned about a charger, to persist. None means 'leave unchanged'."""

    site_uid: str
    charger_id: str
    ocpp_version: str | None = None
    connected: bool | None = None
    upstream_connected: bool | None = None
    last_seen: datetime | None = None
    #: What the charger said at boot; within it too, None fields are left unchanged.
    identity: ChargerIdentity | None = None
    #: connector id -> (status, when the charger reported it)
    connectors: dict[int, tuple[str, datetime]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One connection attempt of a charger, accepted or refused."""

    at: datetime
    site_uid: str
    charge_point_id: str
    remote_addr: str | None
    accepted: bool
    reason: str | None
    subprotocol: str | None = None
    offered_subprotocols: tuple[str, ...] = ()
    http_status: int | None = None
