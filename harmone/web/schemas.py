"""The REST API's request and response bodies, derived from `harmone.domain`.

Site and charger fields, with their rules, are declared once in the domain: `SiteIn` is the
domain's `SiteSettings`, `SitePatch` and `ChargerPatch` are its settings with every field
optional, `SiteOut` is the stored `Site` plus its OCPP URL, and `ChargerOut` flattens the
charger's `ChargerIdentity` into `vendor`, `model`, … as the contract shows them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harmone.domain import (
    ChargerIdentity,
    ChargerSettings,
    Partial,
    Site,
    SiteFields,
    SiteSettings,
)

__all__ = [
    "AttemptOut",
    "ChargerOut",
    "ChargerPatch",
    "ConnectorOut",
    "FrameOut",
    "SiteIn",
    "SiteOut",
    "SitePatch",
]


class SiteIn(SiteSettings):
    """A new site: every rule of the domain applies (a gateway site needs gateway_host)."""


class SitePatch(Partial, SiteFields):
    """Any writable site field; the store checks the site as a whole after the change."""


class SiteOut(Site):
    ocpp_url: str = Field(description="exactly what a charger must be given")


class ConnectorOut(BaseModel):
    id: int
    status: str | None
    updated_at: datetime | None = None


class _ChargerHead(BaseModel):
    id: str
    site_uid: str
    name: str | None
    connected: bool
    ocpp_version: str | None


class ChargerOut(ChargerIdentity, _ChargerHead):
    """A charger with its boot identity as flat fields (`_ChargerHead`'s come first)."""

    model_config = ConfigDict(frozen=False)

    last_seen: datetime | None
    cpms_url: str | None = Field(description="this charger's own CPMS; null: the site's")
    effective_cpms_url: str | None = Field(description="the CPMS it is relayed to")
    upstream_connected: bool
    upstream_error: str | None = Field(description="why the CPMS link is down, if it is")
    remote_addr: str | None = None
    connected_since: datetime | None = None
    connectors: list[ConnectorOut]
    password_set: bool = Field(
        default=False, description="HARMON-E holds an HTTP Basic password for this charger"
    )


class ChargerPatch(Partial, ChargerSettings):
    """A charger's name or its own CPMS (null: the site's)."""


class AttemptOut(BaseModel):
    at: datetime
    site_uid: str
    charge_point_id: str
    remote_addr: str | None
    accepted: bool
    reason: str | None
    http_status: int | None
    subprotocol: str | None
    offered_subprotocols: list[str]


class FrameOut(BaseModel):
    at: datetime
    sender: Literal["charger", "cpms", "harmone"]
    receiver: Literal["charger", "cpms", "harmone"]
    text: str
