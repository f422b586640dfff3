"""The one exception root of HARMON-E.

Tree::

    HarmoneError
    ├── ConfigError              bad configuration or command-line input (permanent)
    │   └── InvalidFields        input that breaks the rule of named fields (`fields`)
    ├── StoreError               the database refused or failed an operation
    │   ├── NotFound             the named site, charger or user does not exist
    │   └── Conflict             a unique value (e-mail, site UID, …) is taken
    ├── AuthError                unknown user, wrong password, bad token
    ├── Forbidden                a known user whose role does not allow this
    ├── OcppError                a protocol failure that carries an OCPP error code
    │   ├── FrameError           a frame that cannot be understood (code FormationViolation /
    │   │                        FormatViolation / RpcFrameworkError by version)
    │   └── CallErrorReceived    the charger answered one of our calls with a CallError
    ├── RelayError               the relay could not do what was asked
    │   ├── ChargerNotConnected  no live session for that charger (permanent for this call)
    │   ├── CallTimeout          the charger did not answer in time (retryable)
    │   ├── LeaseLost            this node no longer runs that site's load manager (fenced)
    │   └── UpstreamUnavailable  the CPMS link is down or refused us (retryable)
    └── SimulatorError           a simulated charger or CPMS failed
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AuthError",
    "CallErrorReceived",
    "CallTimeout",
    "ChargerNotConnected",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "FrameError",
    "HarmoneError",
    "InvalidFields",
    "LeaseLost",
    "NotFound",
    "OcppError",
    "RelayError",
    "RetryableError",
    "SimulatorError",
    "StoreError",
    "UpstreamUnavailable",
]


class HarmoneError(Exception):
    """Root of every exception HARMON-E raises on purpose."""


class RetryableError(HarmoneError):
    """Mixin marker: the same operation may succeed if tried again later."""


class ConfigError(HarmoneError):
    """Configuration or command-line input that cannot work."""


class InvalidFields(ConfigError):
    """Input that breaks the rules of named fields.

    `fields` maps each field to what is wrong with it, so that a form can show the message
    next to the field; the message lists them as "field: problem; …".
    """

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields = dict(fields)
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in self.fields.items()))


class StoreError(HarmoneError):
    """The database refused or failed an operation."""


class NotFound(StoreError):
    """The named object does not exist."""


class Conflict(StoreError):
    """A value that must be unique is already taken."""


class AuthError(HarmoneError):
    """Unknown user, wrong password or invalid token."""


class Forbidden(HarmoneError):
    """The user is known, but their role or site scope does not allow this."""


class OcppError(HarmoneError):
    """A protocol failure with the OCPP error code to answer it with."""

    default_code = "GenericError"

    def __init__(self, description: str, code: str | None = None, details: Any = None) -> None:
        super().__init__(description)
        self.code = code or self.default_code
        self.description = description
        self.details = details if details is not None else {}


class FrameError(OcppError):
    """A frame whose envelope cannot be understood."""

    default_code = "FormationViolation"


class CallErrorReceived(OcppError):
    """The charger answered one of HARMON-E's own calls with a CallError."""


class RelayError(HarmoneError):
    """The relay could not do what was asked."""


class ChargerNotConnected(RelayError):
    """No live session for that charger."""


class CallTimeout(RelayError, RetryableError):
    """The charger did not answer a call within its timeout."""


class LeaseLost(RelayError):
    """A load manager's call carried a fencing token older than the site's lease: another
    node runs that site's load manager now (cluster)."""


class UpstreamUnavailable(RelayError, RetryableError):
    """The CPMS link is down or the CPMS refused the connection."""


class SimulatorError(HarmoneError):
    """A simulated charger or CPMS failed."""
