"""The REST API's request and response bodies, derived from `harmone.domain`, and how
records become them (`site_out`, `charger_out`, `attempt_out`: the console shows the same).

Site and charger fields, with their rules, are declared once in the domain: `SiteIn` is the
domain's `SiteSettings`, `SitePatch` and `ChargerPatch` are its settings with every field
optional, `SiteOut` is the stored `Site` plus its OCPP URL, and `ChargerOut` flattens the
charger's `ChargerIdentity` into `vendor`, `model`, … as the contract shows them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from harmone.domain import (
    Charger,
    ChargerIdentity,
    ChargerSettings,
    Connector,
    Partial,
    Site,
    SiteFields,
    SiteSettings,
)
from harmone.relay.state import LiveCharger
from harmone.security import CHARGER_PASSWORD_LENGTHS, charger_password_problem
from harmone.store.records import Attempt

__all__ = [
    "AttemptOut",
    "ChargerOut",
    "ChargerPasswordIn",
    "ChargerPatch",
    "ConnectorOut",
    "FrameOut",
    "SiteIn",
    "SiteOut",
    "SitePatch",
    "UtcDatetime",
    "attempt_out",
    "charger_out",
    "site_out",
]


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)


#: A time in a request: ISO 8601; one without a UTC offset is taken as UTC (never compared,
#: naive, with HARMON-E's aware times).
UtcDatetime = Annotated[
    datetime,
    AfterValidator(_as_utc),
    Field(description="ISO 8601 (e.g. 2026-01-01T00:00:00Z); without a UTC offset: UTC"),
]


class SiteIn(SiteSettings):
    """A new site: every rule of the domain applies (a gateway site needs gateway_host)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "Depot North", "type": "cloud", "cpms_url": "wss://cpms.example.com/ocpp"},
                {"name": "Office car park", "type": "gateway", "gateway_host": "192.168.1.10"},
            ]
        }
    )


class SitePatch(Partial, SiteFields):
    """Any writable site field; the store checks the site as a whole after the change."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "Depot South", "cpms_url": None, "offline_mode": "strict"}]
        }
    )


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
    secondary_cpms_url: str | None = Field(
        default=None, description="this charger's own secondary CPMS; null: the site's"
    )
    effective_secondary_cpms_url: str | None = Field(
        default=None, description="the secondary CPMS it is mirrored to (null: none)"
    )
    secondary_connected: bool = Field(
        default=False, description="is its secondary CPMS connection open"
    )
    secondary_error: str | None = Field(
        default=None, description="why the secondary CPMS link is down, if it is"
    )
    secondary_dropped: int = Field(
        default=0,
        description="frames for the secondary dropped since the charger connected (queue full)",
    )
    remote_addr: str | None = None
    connected_since: datetime | None = None
    connectors: list[ConnectorOut]
    password_set: bool = Field(
        default=False, description="HARMON-E holds an HTTP Basic password for this charger"
    )


class ChargerPatch(Partial, ChargerSettings):
    """A charger's name or its own CPMS (null: the site's)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Bay 1", "cpms_url": None}]})


class ChargerPasswordIn(BaseModel):
    # No whitespace stripping (unlike the other bodies): a password is taken exactly as sent.
    model_config = ConfigDict(extra="forbid")

    password: str = Field(
        description=f"{CHARGER_PASSWORD_LENGTHS[0]} to {CHARGER_PASSWORD_LENGTHS[1]} printable "
        "ASCII characters (OCPP BasicAuthPassword); the same must be configured in the charger",
        # Documented in the schema too (the validator below says why a password is refused).
        json_schema_extra={
            "minLength": CHARGER_PASSWORD_LENGTHS[0],
            "maxLength": CHARGER_PASSWORD_LENGTHS[1],
            "pattern": "^[\\x20-\\x7e]*$",
        },
    )

    @field_validator("password")
    @classmethod
    def _allowed(cls, value: str) -> str:
        problem = charger_password_problem(value)
        if problem:
            raise ValueError(problem)
        return value


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


def site_out(site: Site, ocpp_url: str) -> SiteOut:
    return SiteOut.model_construct(**dict(site), ocpp_url=ocpp_url)


def _connector_out(c: Connector) -> ConnectorOut:
    return ConnectorOut(id=c.id, status=c.status, updated_at=c.updated_at)


def charger_out(charger: Charger, live: LiveCharger | None, site: Site) -> ChargerOut:
    """The stored charger, overlaid with the live state of this process (which is newer)."""
    effective = charger.cpms_url or site.cpms_url
    secondary = charger.secondary_cpms_url or site.secondary_cpms_url
    if live is None:
        return ChargerOut(
            id=charger.id,
            site_uid=charger.site_uid,
            name=charger.name,
            connected=charger.connected,
            ocpp_version=charger.ocpp_version,
            **dict(charger.identity),
            last_seen=charger.last_seen,
            cpms_url=charger.cpms_url,
            effective_cpms_url=effective,
            upstream_connected=charger.upstream_connected,
            upstream_error=None,
            secondary_cpms_url=charger.secondary_cpms_url,
            effective_secondary_cpms_url=secondary,
            connectors=[_connector_out(c) for c in charger.connectors],
            password_set=charger.password_set,
        )
    connectors = {c.id: _connector_out(c) for c in charger.connectors}
    for cid, (st, at) in live.connectors.items():
        connectors[cid] = ConnectorOut(id=cid, status=st, updated_at=at)
    return ChargerOut(
        id=charger.id,
        site_uid=charger.site_uid,
        name=charger.name,
        connected=live.connected,
        ocpp_version=live.ocpp_version or charger.ocpp_version,
        **dict(live.identity.over(charger.identity)),
        last_seen=live.last_seen or charger.last_seen,
        cpms_url=charger.cpms_url,
        effective_cpms_url=effective,
        upstream_connected=live.upstream_connected,
        upstream_error=live.upstream_error if live.connected and effective else None,
        secondary_cpms_url=charger.secondary_cpms_url,
        effective_secondary_cpms_url=secondary,
        secondary_connected=live.connected and live.secondary_connected,
        secondary_error=live.secondary_error if live.connected and secondary else None,
        secondary_dropped=live.secondary_dropped if live.connected else 0,
        remote_addr=live.remote_addr if live.connected else None,
        connected_since=live.connected_since if live.connected else None,
        connectors=[connectors[k] for k in sorted(connectors)],
        password_set=charger.password_set,
    )


def attempt_out(a: Attempt) -> AttemptOut:
    return AttemptOut(
        at=a.at,
        site_uid=a.site_uid,
        charge_point_id=a.charge_point_id,
        remote_addr=a.remote_addr,
        accepted=a.accepted,
        reason=a.reason,
        http_status=a.http_status,
        subprotocol=a.subprotocol,
        offered_subprotocols=list(a.offered_subprotocols),
    )
