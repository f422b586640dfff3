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
    "Role",
    "Site",
    "SiteType",
    "User",
]

SiteType = Literal["cloud", "gateway"]
Role = Literal["admin", "operator", "viewer"]


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    role: Role
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Site:
    uid: str
    name: str
    type: SiteType
    gateway_host: str | None
    cpms_url: str | None
    created_at: datetime


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
