"""OCPP versions, their WebSocket subprotocols and their spellings of the RPC error codes.

The three versions HARMON-E speaks disagree on a few CALLERROR codes, and a peer may reject a
code that is not in its own version's table, so every code HARMON-E sends goes through
`error_code`:

* format: 1.6 FormationViolation, 2.x FormatViolation;
* occurrence_constraint: 1.6 OccurenceConstraintViolation, 2.x OccurrenceConstraintViolation;
* rpc_framework: 2.x RpcFrameworkError; 1.6 has no such code and gets ProtocolError;
* message_type_not_supported: 2.x MessageTypeNotSupported; 1.6 gets GenericError.

Both 1.6 typos are listed in the OCPP-J 1.6 errata as "will not be fixed"; the 2.0.1 and 2.1
Part 4 tables use the corrected names. (Some 2.0.1 functional requirements in Part 2 still write
"OccurenceConstraintViolation"; the Part 4 table is the one that defines the wire value.)
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ERROR_KINDS",
    "SUPPORTED_SUBPROTOCOLS",
    "OcppVersion",
    "error_code",
    "subprotocol_for",
    "version_for_subprotocol",
]


class OcppVersion(StrEnum):
    """An OCPP version HARMON-E relays and answers."""

    V16 = "1.6"
    V201 = "2.0.1"
    V21 = "2.1"

    @property
    def subprotocol(self) -> str:
        """The WebSocket subprotocol that selects this version (``ocpp2.0.1``, …)."""
        return f"ocpp{self.value}"

    @property
    def is_2x(self) -> bool:
        """True for the 2.x family, which shares framing, error codes and schema naming."""
        return self is not OcppVersion.V16


#: Subprotocols HARMON-E accepts, newest first: the order is HARMON-E's preference when a
#: charger offers several.
SUPPORTED_SUBPROTOCOLS: tuple[str, ...] = tuple(
    v.subprotocol for v in (OcppVersion.V21, OcppVersion.V201, OcppVersion.V16)
)

_BY_SUBPROTOCOL: dict[str, OcppVersion] = {v.subprotocol: v for v in OcppVersion}


def subprotocol_for(version: OcppVersion) -> str:
    """The WebSocket subprotocol of `version`."""
    return version.subprotocol


def version_for_subprotocol(subprotocol: str | None) -> OcppVersion | None:
    """The version a negotiated subprotocol selects, or None when HARMON-E does not speak it.

    Subprotocol names are compared exactly: RFC 6455 makes them case-sensitive tokens.
    """
    if subprotocol is None:
        return None
    return _BY_SUBPROTOCOL.get(subprotocol)


# Codes spelled the same in every version.
_COMMON: dict[str, str] = {
    "protocol": "ProtocolError",
    "type_constraint": "TypeConstraintViolation",
    "property_constraint": "PropertyConstraintViolation",
    "not_implemented": "NotImplemented",
    "not_supported": "NotSupported",
    "internal": "InternalError",
    "security": "SecurityError",
    "generic": "GenericError",
}

_V16: dict[str, str] = {
    **_COMMON,
    "format": "FormationViolation",
    "occurrence_constraint": "OccurenceConstraintViolation",
    # 1.6 has no code for an unreadable RPC frame; "incomplete" is the nearest it defines, and a
    # 1.6 peer may refuse a code outside its own table.
    "rpc_framework": "ProtocolError",
    # Nor for an unknown message type; nothing narrower than GenericError fits.
    "message_type_not_supported": "GenericError",
}

_V2X: dict[str, str] = {
    **_COMMON,
    "format": "FormatViolation",
    "occurrence_constraint": "OccurrenceConstraintViolation",
    "rpc_framework": "RpcFrameworkError",
    "message_type_not_supported": "MessageTypeNotSupported",
}

#: The kinds `error_code` knows.
ERROR_KINDS: frozenset[str] = frozenset(_V16)


def error_code(version: OcppVersion, kind: str) -> str:
    """The CALLERROR code for `kind` (one of `ERROR_KINDS`) as `version` spells it.

    Raises ValueError for an unknown kind: that is a bug in the caller, not a protocol event.
    """
    table = _V2X if version.is_2x else _V16
    try:
        return table[kind]
    except KeyError:
        raise ValueError(f"unknown OCPP error kind {kind!r}") from None
