"""Typed OCPP events (`harmone.ocpp.events`) as JSON, so that a node can hand what its chargers
said to the node that runs their site's load manager.

Generic over the events' frozen dataclasses: a value is `{"t": ClassName, "f": {field: …}}`;
datetimes travel as ISO 8601, tuples as lists, enums as their values. Only the classes of
`harmone.ocpp.events` are decoded (never an arbitrary name).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from datetime import datetime
from functools import cache
from typing import Any

from harmone.ocpp import events as ev
from harmone.ocpp.framing import MessageType
from harmone.ocpp.session import Observe

__all__ = ["decode_observe", "encode_observe"]

_CLASSES: dict[str, type[Any]] = {
    name: obj
    for name, obj in vars(ev).items()
    if isinstance(obj, type) and dataclasses.is_dataclass(obj)
}


def encode_observe(obs: Observe) -> dict[str, Any]:
    return {
        "sender": obs.sender,
        "type": int(obs.type),
        "action": obs.action,
        "events": [_encode(e) for e in obs.events],
    }


def decode_observe(raw: dict[str, Any]) -> Observe:
    return Observe(
        sender=raw["sender"],
        type=MessageType(raw["type"]),
        action=str(raw["action"]),
        text="",  # the frame itself stays on the node that relayed it
        events=tuple(_decode_object(e) for e in raw["events"]),
    )


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"t": type(value).__name__, "f": fields}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


def _decode_object(raw: dict[str, Any]) -> Any:
    cls = _CLASSES.get(raw["t"])
    if cls is None:
        raise ValueError(f"not an OCPP event type: {raw['t']!r}")
    hints = _hints(raw["t"])
    values = {name: _decode(hints[name], v) for name, v in raw["f"].items() if name in hints}
    return cls(**values)


@cache
def _hints(name: str) -> dict[str, Any]:
    return typing.get_type_hints(_CLASSES[name], vars(ev))


def _decode(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _decode(options[0], value) if len(options) == 1 else _decode_any(value)
    if origin is tuple:
        args = typing.get_args(hint)
        return tuple(_decode(args[0], v) for v in value) if args else tuple(value)
    if origin is dict:
        _, vt = typing.get_args(hint) or (Any, Any)
        return {k: _decode(vt, v) for k, v in value.items()}
    if origin is typing.Literal or hint is Any:
        return _decode_any(value)
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint):
            return _decode_object(value)
        if issubclass(hint, enum.Enum):
            return hint(value)
        if hint is datetime:
            return datetime.fromisoformat(value)
        if hint is float:
            return float(value)
    return _decode_any(value)


def _decode_any(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"t", "f"}:
        return _decode_object(value)
    return value
