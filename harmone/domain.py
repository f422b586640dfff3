"""Sites and chargers as HARMON-E understands them: their fields and every rule about those
fields, written once.

The store validates what it writes through these models, the REST API derives its request and
response bodies from them (`harmone.web.schemas`), and the console's forms go through the API.
A new site field is declared here, in the ORM model and in a migration; nothing else changes
(docs/architecture.md, "Adding a site field").

Records (`Site`, `Charger`) are frozen pydantic models that the store builds from its rows
without validation (`harmone.store.rows`): the rules apply to what is written.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from harmone.errors import ConfigError, InvalidFields
from harmone.ocpp.secondary import DEFAULT_RULE, normalise_rule

__all__ = [
    "Charger",
    "ChargerIdentity",
    "ChargerSettings",
    "Connector",
    "OfflineMode",
    "Partial",
    "Site",
    "SiteFields",
    "SiteSettings",
    "SiteType",
    "changed",
    "check_charger_id",
    "invalid_fields",
    "settings",
]

SiteType = Literal["cloud", "gateway"]
OfflineMode = Literal["hold", "strict"]

M = TypeVar("M", bound=BaseModel)

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_MAX_NAME = 200
_MAX_URL = 2048


# -- field rules -----------------------------------------------------------------------


def _text(value: object, what: str, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    value = value.strip()
    if not value:
        if required:
            raise ValueError(f"{what} must not be empty")
        return None
    if len(value) > _MAX_NAME:
        raise ValueError(f"{what} is longer than {_MAX_NAME} characters")
    return value


def _site_name(value: object) -> str | None:
    return _text(value, "a site name", required=True)


def _charger_name(value: object) -> str | None:
    return _text(value, "a charger name", required=False)


def _cpms_url(value: object) -> str | None:
    """A CPMS URL is ws:// or wss:// with a host; the charger's identity is appended to it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("cpms_url must be a string or null")
    value = value.strip()
    if not value:
        return None
    if len(value) > _MAX_URL:
        raise ValueError(f"cpms_url is longer than {_MAX_URL} characters")
    if any(c.isspace() for c in value):
        raise ValueError("cpms_url must not contain spaces")
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("ws", "wss"):
        raise ValueError("cpms_url must start with ws:// or wss://")
    if not parts.hostname:
        raise ValueError("cpms_url must name a host, like wss://host/path")
    if parts.query or parts.fragment:
        raise ValueError("cpms_url must not contain a query or fragment")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("cpms_url has an invalid port") from None
    return value.rstrip("/")


def _secondary_cpms_url(value: object) -> str | None:
    try:
        return _cpms_url(value)
    except ValueError as exc:
        raise ValueError(str(exc).replace("cpms_url", "secondary_cpms_url", 1)) from None


def _gateway_host(value: object) -> str | None:
    """The box's LAN address: an IP or host name, optionally with :port; nothing else."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("gateway_host must be a string or null")
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


def _charger_auth(value: object) -> bool:
    # Strictly a bool: "false" or 0 switching authentication on or off would be a surprise.
    if not isinstance(value, bool):
        raise ValueError(f"charger_auth is true or false, not {value!r}")
    return value


SiteName = Annotated[str, BeforeValidator(_site_name), Field(min_length=1, max_length=_MAX_NAME)]
ChargerName = Annotated[
    Annotated[str, Field(max_length=_MAX_NAME)] | None, BeforeValidator(_charger_name)
]
CpmsUrl = Annotated[str | None, BeforeValidator(_cpms_url)]
SecondaryCpmsUrl = Annotated[str | None, BeforeValidator(_secondary_cpms_url)]
SecondaryRuleText = Annotated[str, BeforeValidator(normalise_rule)]
GatewayHost = Annotated[str | None, BeforeValidator(_gateway_host)]
ChargerAuth = Annotated[bool, BeforeValidator(_charger_auth)]

_CHARGER_AUTH = (
    "chargers must authenticate with HTTP Basic (user: their identity, password: their own, "
    "set with PUT .../chargers/{id}/password), checked by HARMON-E at the handshake"
)
_SECONDARY_URL = (
    "a second backend (monitoring, energy manager, vendor portal): it gets a copy of the "
    "chargers' calls, its answers are dropped, its calls are filtered by secondary_rule"
)
_SECONDARY_RULE = (
    'what the secondary CPMS may ask of a charger: "read-only" (calls that change nothing), '
    '"allow:A,B" (only these actions) or "deny:A,B" (all but these); '
    '{"mode": "allow", "actions": ["A", "B"]} is accepted too'
)
_OFFLINE_MODE = (
    "CPMS link down: hold = answer locally, journal and replay; strict = close the charger"
)


def check_charger_id(value: str) -> str:
    """A charge point identity HARMON-E can store (1 to 255 characters)."""
    if not value or len(value) > 255:
        raise ConfigError(f"not a charge point id: {value!r}")
    return value


# -- sites -----------------------------------------------------------------------------


class SiteFields(BaseModel):
    """What a person sets on a site, each field with its own rule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: SiteName
    type: SiteType
    # validate_default: the gateway rule below must also see a missing gateway_host.
    gateway_host: GatewayHost = Field(default=None, validate_default=True)
    cpms_url: CpmsUrl = Field(
        default=None, description="the chargers' CPMS; null: HARMON-E answers them itself"
    )
    offline_mode: OfflineMode = Field(default="hold", description=_OFFLINE_MODE)
    charger_auth: ChargerAuth = Field(default=False, description=_CHARGER_AUTH)
    secondary_cpms_url: SecondaryCpmsUrl = Field(default=None, description=_SECONDARY_URL)
    secondary_rule: SecondaryRuleText = Field(default=DEFAULT_RULE, description=_SECONDARY_RULE)


class SiteSettings(SiteFields):
    """A site's settings, complete and consistent: the rules across fields live here."""

    @field_validator("gateway_host")
    @classmethod
    def _gateway_needs_host(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("type") == "gateway" and not value:
            raise ValueError("a gateway site needs the box's LAN address")
        return value


class Site(SiteSettings):
    """A stored site. The UID is part of the OCPP URL chargers are given: never guessable."""

    uid: str
    created_at: datetime


# -- chargers --------------------------------------------------------------------------


class ChargerIdentity(BaseModel):
    """What a charger says about itself when it boots (BootNotification)."""

    model_config = ConfigDict(frozen=True)

    vendor: str | None = None
    model: str | None = None
    serial_number: str | None = None
    firmware_version: str | None = None

    def over(self, older: ChargerIdentity) -> ChargerIdentity:
        """This identity, with `older`'s value wherever this one has none."""
        return ChargerIdentity.model_construct(
            **{
                name: getattr(self, name) or getattr(older, name)
                for name in ChargerIdentity.model_fields
            }
        )


class ChargerSettings(BaseModel):
    """What a person sets on a charger."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ChargerName = None
    cpms_url: CpmsUrl = Field(default=None, description="this charger's own CPMS; null: the site's")
    secondary_cpms_url: SecondaryCpmsUrl = Field(
        default=None, description="this charger's own secondary CPMS; null: the site's"
    )


@dataclass(frozen=True, slots=True)
class Connector:
    id: int
    status: str | None
    updated_at: datetime | None = None


class Charger(ChargerSettings):
    """A charger as stored: identity, settings and the last state the relay persisted."""

    site_uid: str
    id: str
    ocpp_version: str | None
    identity: ChargerIdentity = ChargerIdentity()
    connected: bool
    upstream_connected: bool
    last_seen: datetime | None
    created_at: datetime
    connectors: tuple[Connector, ...] = ()
    #: Whether HARMON-E holds a password (hash) for this charger's HTTP Basic authentication.
    password_set: bool = False


# -- validating input ------------------------------------------------------------------


def invalid_fields(exc: ValidationError) -> InvalidFields:
    """The problems of a validation by field, e.g. {"cpms_url": "cpms_url must start with
    ws://"}: the REST API answers them as one sentence, a form shows each by its field."""
    fields: dict[str, str] = {}
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "input"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        fields[loc] = f"{fields[loc]}; {message}" if loc in fields else message
    return InvalidFields(fields or {"input": "invalid input"})


def _only_writable(model: type[BaseModel], names: Iterable[str], what: str) -> None:
    unknown = set(names) - set(model.model_fields)
    if unknown:
        raise ConfigError(
            f"cannot set {', '.join(sorted(unknown))} on a {what} "
            f"(writable: {', '.join(sorted(model.model_fields))})"
        )


def settings(model: type[M], fields: Mapping[str, object], what: str) -> M:
    """`fields` validated as a `model`; InvalidFields naming the fields otherwise."""
    _only_writable(model, fields, what)
    try:
        return model.model_validate(dict(fields))
    except ValidationError as exc:
        raise invalid_fields(exc) from None


def changed(current: M, changes: Mapping[str, object], what: str) -> M:
    """`current` with `changes` applied, the whole validated again (rules across fields too)."""
    model = type(current)
    _only_writable(model, changes, what)
    merged = {name: getattr(current, name) for name in model.model_fields}
    return settings(model, {**merged, **changes}, what)


class Partial(BaseModel):
    """Base of a model whose every field, taken from its other bases, may be left out.

    `class SitePatch(Partial, SiteFields)` is SiteFields with each field optional and
    unvalidated when absent (a PATCH body, read with `exclude_unset`); a field sent explicitly
    is validated by its own rule, so `"name": null` is refused. The fields are copied, never
    shared with the base they come from.
    """

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, info in list(cls.__pydantic_fields__.items()):
            if info.is_required():
                optional = copy.copy(info)
                optional.default = None
                cls.__pydantic_fields__[name] = optional
        cls.model_rebuild(force=True)

    def changes(self) -> dict[str, Any]:
        """The fields that were sent, validated."""
        return self.model_dump(exclude_unset=True)
