"""The REST API's request and response bodies, with the validation the contract promises."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

__all__ = [
    "AttemptOut",
    "ChargerOut",
    "ChargerPatch",
    "ConnectorOut",
    "FrameOut",
    "SiteIn",
    "SiteOut",
    "SitePatch",
    "validate_cpms_url",
    "validate_gateway_host",
]

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def validate_cpms_url(value: str | None) -> str | None:
    """A CPMS URL is ws:// or wss:// with a host; the charger's identity is appended to it."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError("cpms_url must start with ws:// or wss://")
    if not parts.hostname:
        raise ValueError("cpms_url must name a host")
    if parts.query or parts.fragment:
        raise ValueError("cpms_url must not contain a query or fragment")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("cpms_url has an invalid port") from None
    return value.rstrip("/")


def validate_gateway_host(value: str | None) -> str | None:
    """The box's LAN address: an IP or host name, optionally with :port; nothing else."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if "/" in value or "://" in value:
        raise ValueError(
            "gateway_host is an address like 192.168.1.10 or box.local[:port], not a URL"
        )
    host, port = value, None
    if value.startswith("["):  # [IPv6]:port
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else (None if not rest else "bad")
    elif value.count(":") == 1:
        host, port = value.split(":")
    if port is not None and (not port.isdigit() or not 0 < int(port) < 65536):
        raise ValueError("gateway_host has an invalid port")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise ValueError(
                f"gateway_host {host!r} is neither an IP address nor a host name"
            ) from None
    return value


_CHARGER_AUTH = (
    "chargers must authenticate with HTTP Basic (user: their identity, password: their own, "
    "set with PUT .../chargers/{id}/password), checked by HARMON-E at the handshake"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class SiteIn(_Strict):
    name: str = Field(min_length=1, max_length=200)
    type: Literal["cloud", "gateway"]
    gateway_host: str | None = None
    cpms_url: str | None = None
    offline_mode: Literal["hold", "strict"] = Field(
        default="hold",
        description="CPMS link down: hold = answer locally, journal and replay; "
        "strict = close the charger",
    )
    charger_auth: StrictBool = Field(default=False, description=_CHARGER_AUTH)

    _cpms = field_validator("cpms_url")(validate_cpms_url)
    _gw = field_validator("gateway_host")(validate_gateway_host)


class SitePatch(_Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    type: Literal["cloud", "gateway"] | None = None
    gateway_host: str | None = None
    cpms_url: str | None = None
    offline_mode: Literal["hold", "strict"] | None = None
    # Not nullable: only sent when it changes (the API reads exclude_unset).
    charger_auth: StrictBool = Field(default=False, description=_CHARGER_AUTH)

    _cpms = field_validator("cpms_url")(validate_cpms_url)
    _gw = field_validator("gateway_host")(validate_gateway_host)


class SiteOut(BaseModel):
    uid: str
    name: str
    type: Literal["cloud", "gateway"]
    gateway_host: str | None
    cpms_url: str | None
    ocpp_url: str
    created_at: datetime
    offline_mode: Literal["hold", "strict"]
    charger_auth: bool = Field(default=False, description=_CHARGER_AUTH)


class ConnectorOut(BaseModel):
    id: int
    status: str | None
    updated_at: datetime | None = None


class ChargerOut(BaseModel):
    id: str
    site_uid: str
    name: str | None
    connected: bool
    ocpp_version: str | None
    vendor: str | None
    model: str | None
    serial_number: str | None
    firmware_version: str | None
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


class ChargerPatch(_Strict):
    name: str | None = Field(default=None, max_length=200)
    cpms_url: str | None = None

    _cpms = field_validator("cpms_url")(validate_cpms_url)


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
