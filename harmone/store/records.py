"""Plain, frozen records the store hands out (never live ORM objects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = [
    "Attempt",
    "Charger",
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

SiteType = Literal["cloud", "gateway"]
Role = Literal["admin", "operator", "viewer"]
OfflineMode = Literal["hold", "strict"]
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
class Site:
    uid: str
    name: str
    type: SiteType
    gateway_host: str | None
    cpms_url: str | None
    created_at: datetime
    #: While a charger's CPMS link is down: "hold" (answer locally, journal, replay) or
    #: "strict" (close the charger, as a direct connection would be closed).
    offline_mode: OfflineMode = "hold"
    #: Chargers must authenticate with HTTP Basic and their own password (security profile
    #: 1 over ws://, 2 over wss://), checked by HARMON-E at the handshake.
    charger_auth: bool = False


@dataclass(frozen=True, slots=True)
class Connector:
    id: int
    status: str | None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Charger:
    """A charger as stored: identity, settings and the last state the relay persisted."""

    site_uid: str
    id: str
    name: str | None
    cpms_url: str | None
    ocpp_version: str | None
    vendor: str | None
    model: str | None
    serial_number: str | None
    firmware_version: str | None
    connected: bool
    upstream_connected: bool
    last_seen: datetime | None
    created_at: datetime
    connectors: tuple[Connector, ...] = ()
    #: Whether HARMON-E holds a password (hash) for this charger's HTTP Basic authentication.
    password_set: bool = False


@dataclass(frozen=True, slots=True)
class ChargerState:
    """What the relay learned about a charger, to persist. None means 'leave unchanged'."""

    site_uid: str
    charger_id: str
    ocpp_version: str | None = None
    connected: bool | None = None
    upstream_connected: bool | None = None
    last_seen: datetime | None = None
    vendor: str | None = None
    model: str | None = None
    serial_number: str | None = None
    firmware_version: str | None = None
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
