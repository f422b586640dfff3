"""Validate OCPP payloads against the JSON schemas shipped with the ``ocpp`` package.

Schemas are read lazily and each one gets a cached validator of the draft its ``$schema``
declares (draft-04 for most 1.6 files, draft-06 for the rest). A failed validation raises
`OcppError` whose code is the one the payload's version uses for that kind of failure:

* wrong structure (not an object, unknown property) → FormationViolation / FormatViolation
* wrong JSON type of a field → TypeConstraintViolation
* missing required field, too few or too many array items → Occu(r)renceConstraintViolation
* bad value (enum, length, range, multiple, date-time) → PropertyConstraintViolation

2.x defines ProtocolError as "not conform the PDU structure", which could also claim unknown
properties; FormatViolation is used instead because the 2.x functional requirements use it for
messages a receiver cannot accept as sent, the common implementations do the same, and it keeps
one mapping for every version.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from fractions import Fraction
from importlib import resources
from typing import Any, Literal

from jsonschema import Draft4Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError, best_match

from harmone.errors import OcppError
from harmone.ocpp.versions import OcppVersion, error_code

__all__ = [
    "Direction",
    "acceptable",
    "has_response",
    "known_actions",
    "load_schema",
    "validate_request",
    "validate_response",
]

Direction = Literal["request", "response"]

#: OCPP-J 2.x caps errorDescription at 255 characters; 1.6 peers are no worse off for it.
_MAX_DESCRIPTION = 255

_DIRECTORIES: dict[OcppVersion, str] = {
    OcppVersion.V16: "v16",
    OcppVersion.V201: "v201",
    OcppVersion.V21: "v21",
}

_OCCURRENCE = frozenset({"required", "minItems", "maxItems"})
_PROPERTY = frozenset(
    {
        "enum",
        "const",
        "format",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    }
)


@functools.cache
def _index(version: OcppVersion) -> dict[tuple[str, Direction], str]:
    """(action, direction) → schema file name, from the files present for `version`.

    1.6 names a request ``Action.json``, 2.x ``ActionRequest.json``; an action with no
    ``…Response.json`` (the 2.1 SEND ``NotifyPeriodicEventStream``) has a request only.
    """
    folder = resources.files("ocpp") / _DIRECTORIES[version] / "schemas"
    index: dict[tuple[str, Direction], str] = {}
    for entry in folder.iterdir():
        name = entry.name
        if not name.endswith(".json"):
            continue
        stem = name.removesuffix(".json")
        if stem.endswith("Response"):
            index[(stem.removesuffix("Response"), "response")] = name
        elif version.is_2x and stem.endswith("Request"):
            index[(stem.removesuffix("Request"), "request")] = name
        else:
            index[(stem, "request")] = name
    return index


@functools.cache
def known_actions(version: OcppVersion) -> frozenset[str]:
    """Every action `version` defines, in either direction (charger- and CSMS-initiated)."""
    return frozenset(action for action, direction in _index(version) if direction == "request")


def has_response(version: OcppVersion, action: str) -> bool:
    """Whether `action` has a response in `version` (a 2.1 SEND has none)."""
    return (action, "response") in _index(version)


@functools.cache
def _load(version: OcppVersion, action: str, direction: Direction) -> dict[str, Any]:
    name = _index(version).get((action, direction))
    if name is None:
        what = "action" if action not in known_actions(version) else f"{direction} for"
        raise OcppError(
            f"OCPP {version} has no {what} {action!r}",
            code=error_code(version, "not_implemented"),
        )
    path = resources.files("ocpp") / _DIRECTORIES[version] / "schemas" / name
    # Some upstream schema files start with a byte order mark.
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8-sig"))
    return schema


def load_schema(version: OcppVersion, action: str, direction: Direction) -> dict[str, Any]:
    """The JSON schema of `action`'s `direction` in `version` (a copy: callers may change it).

    Raises OcppError (NotImplemented) when the version has no such schema.
    """
    return copy.deepcopy(_load(version, action, direction))


def _multiple_of(
    validator: Any, divisor: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """``multipleOf`` in exact decimal arithmetic.

    The stock check divides binary floats, so 1.6's ``multipleOf: 0.1`` rejects 21.3, and it
    raises on NaN and infinity instead of reporting them.
    """
    if not validator.is_type(instance, "number"):
        return
    try:
        # str() gives the shortest repr, i.e. the decimal the sender wrote.
        value = Fraction(instance) if isinstance(instance, int) else Fraction(str(instance))
        ok = (value / Fraction(str(divisor))).denominator == 1
    except (ValueError, OverflowError, ZeroDivisionError):
        ok = False
    if not ok:
        yield ValidationError(f"value is not a multiple of {divisor}")


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)

_FORMATS = FormatChecker(formats=())


def _is_date_time(instance: object) -> bool:
    """RFC 3339 date-time with an explicit offset, and a real calendar date and time."""
    if not isinstance(instance, str):
        return True
    if _RFC3339.fullmatch(instance) is None:
        return False
    datetime.fromisoformat(instance.upper().replace("Z", "+00:00"))
    return True


# Registered by call, not as a decorator: jsonschema is untyped, and so would the function be.
_FORMATS.checks("date-time", raises=ValueError)(_is_date_time)


@functools.cache
def _validator_class(base: type[Any]) -> type[Any]:
    return validators.extend(base, {"multipleOf": _multiple_of})  # type: ignore[no-any-return]


@functools.cache
def _validator(version: OcppVersion, action: str, direction: Direction, check_formats: bool) -> Any:
    schema = _load(version, action, direction)
    base = validators.validator_for(schema, default=Draft4Validator)
    # Without a format checker "format" is only an annotation in draft-04/06, which is how the
    # ocpp package and most CSMSs treat what chargers send: a charger whose timestamps lack an
    # offset would otherwise have its transaction messages refused and resent forever.
    return _validator_class(base)(schema, format_checker=_FORMATS if check_formats else None)


def _kind(error: ValidationError) -> str:
    constraint = error.validator
    if constraint == "type":
        # A payload that is not even an object does not have the PDU's structure at all.
        return "format" if not error.absolute_path else "type_constraint"
    if constraint in _OCCURRENCE:
        return "occurrence_constraint"
    if constraint in _PROPERTY:
        return "property_constraint"
    # additionalProperties, and anything else the schemas may add: not the PDU's structure.
    return "format"


def _pointer(error: ValidationError) -> str:
    parts = (str(p).replace("~", "~0").replace("/", "~1") for p in error.absolute_path)
    return "".join("/" + p for p in parts)


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 1] + "…"


def _validate(
    version: OcppVersion,
    action: str,
    direction: Direction,
    payload: object,
    check_formats: bool,
) -> None:
    if not isinstance(action, str) or action not in known_actions(version):
        raise OcppError(
            f"OCPP {version} has no action {action!r}",
            code=error_code(version, "not_implemented"),
        )
    validator = _validator(version, action, direction, check_formats)
    try:
        error = best_match(validator.iter_errors(payload))
    except (RecursionError, ValueError):
        # jsonschema puts repr(instance) in its messages: a pathologically deep or huge payload
        # (beyond what json.loads accepts) fails there, and is malformed in any case.
        raise OcppError(
            f"{action} {direction}: payload cannot be validated",
            code=error_code(version, "format"),
        ) from None
    if error is None:
        return
    pointer = _pointer(error)
    where = f" at {pointer}" if pointer else ""
    raise OcppError(
        _shorten(f"{action} {direction}{where}: {error.message}"),
        code=error_code(version, _kind(error)),
        details={"path": pointer, "constraint": str(error.validator)},
    )


def validate_request(
    version: OcppVersion, action: str, payload: object, *, check_formats: bool = False
) -> None:
    """Check the payload of an `action` CALL against `version`'s request schema.

    Raises OcppError with `version`'s code for the first (most relevant) violation, or
    NotImplemented when the version has no such action. ``format`` keywords (date-time) are
    checked only when `check_formats` is set.
    """
    _validate(version, action, "request", payload, check_formats)


def validate_response(
    version: OcppVersion, action: str, payload: object, *, check_formats: bool = False
) -> None:
    """Check the payload of a CALLRESULT to `action` against `version`'s response schema.

    Raises like `validate_request`; NotImplemented also when the action has no response.
    """
    _validate(version, action, "response", payload, check_formats)


#: Violations `acceptable` tolerates: vendor extensions (unknown properties), and format
#: keywords, which are annotations only unless checked on purpose.
_TOLERATED = frozenset({"additionalProperties", "format"})


def acceptable(version: OcppVersion, action: str, direction: Direction, payload: object) -> bool:
    """True if `payload` has the types, required fields and values of `action`'s schema, unknown
    properties aside: the check for frames HARMON-E only reads (it never rejects them)."""
    if not isinstance(action, str) or (action, direction) not in _index(version):
        return False
    validator = _validator(version, action, direction, False)
    try:
        return all(e.validator in _TOLERATED for e in validator.iter_errors(payload))
    except (RecursionError, ValueError):
        return False
