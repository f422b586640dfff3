"""OCPP-J framing: read the envelope of a frame without decoding its payload.

A relayed frame is forwarded as the exact text received, so the hot path only needs
``[type, id, action-or-error-code, ...`` — a regular expression over the first few bytes is
enough and costs far less than decoding a payload that HARMON-E does not look at. Payloads are
decoded only when asked for (`decode`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from harmone.errors import FrameError

__all__ = [
    "Envelope",
    "MessageType",
    "call_error_frame",
    "call_frame",
    "call_result_frame",
    "decode",
    "parse_envelope",
    "payload_of",
    "replace_id",
    "swap_int_member",
]


class MessageType(IntEnum):
    CALL = 2
    CALLRESULT = 3
    CALLERROR = 4
    #: OCPP 2.1 only.
    CALLRESULTERROR = 5
    SEND = 6


# `[ <digit> , "<id>" [, "<third>"]` — the third element is the action of a CALL/SEND and the
# error code of a CALLERROR; a CALLRESULT has an object there, which this does not match.
# (Strings as `[^"\\]*(?:\\.[^"\\]*)*`: the same language as `(?:[^"\\]|\\.)*`, matched several
# times faster by Python's engine, and this runs for every frame.)
_ENVELOPE = re.compile(
    r'\s*\[\s*(\d+)\s*,\s*"([^"\\]*(?:\\.[^"\\]*)*)"\s*(?:,\s*"([^"\\]*(?:\\.[^"\\]*)*)")?'
)
# The id alone, to answer a frame whose envelope is otherwise broken.
_ID_ONLY = re.compile(r'\s*\[\s*\d+\s*,\s*"((?:[^"\\]|\\.){1,36})"')

_TYPES = {str(int(t)): t for t in MessageType}
#: OCPP-J caps message ids at 36 characters.
MAX_ID_LENGTH = 36
_DIGITS = frozenset("0123456789")


def _unescape(raw: str) -> str | None:
    """The JSON string body `raw` decoded; None if it is not one HARMON-E can echo: a bad
    escape (`\\q`, a short `\\u12`), or an escaped lone surrogate (`\\ud800`), which has no
    UTF-8 form, so that an answer quoting it could not be sent."""
    if "\\" not in raw:
        return raw
    try:
        value = str(json.loads(f'"{raw}"'))
        value.encode("utf-8")
    except ValueError:  # UnicodeEncodeError is one
        return None
    return value


@dataclass(slots=True)  # not frozen: one is made per frame, and frozen costs
class Envelope:
    """What the relay needs to know about a frame."""

    type: MessageType
    id: str
    #: The action of a CALL/SEND; the error code of a CALLERROR; None for a CALLRESULT.
    action: str | None


# The compact form every charger and CPMS sends in practice: `[2,"id","Action",` or
# `[3,"id",` with no whitespace and no escapes. Read with one small pattern; anything else
# (and anything this cannot vouch for) takes the general parser below, which decides.
_COMPACT = re.compile(r'\[([2-6]),"([^"\\]{1,36})",(?:"([^"\\]*)",)?')
#: per type digit: the type, and whether it must carry a third string (action, error code)
_COMPACT_KINDS: dict[str, tuple[MessageType, bool]] = {}


def parse_envelope(text: str) -> Envelope:
    """Parse the envelope of `text`.

    Raises FrameError whose `details` carry the `id` and `type` when they could be read, so
    that the caller can still answer a broken CALL with a CallError.
    """
    m = _COMPACT.match(text)
    if m is not None and text[-1] == "]":
        kind, msg_id, third = m.groups()
        mtype, needs_third = _COMPACT_KINDS[kind]
        if third is None:
            # a string right after the id: an action the pattern could not read, or a
            # CALLRESULT without an object; the general parser says which
            if not needs_third and text[m.end()] != '"':
                return Envelope(mtype, msg_id, None)
        elif needs_third:
            return Envelope(mtype, msg_id, third)
    return _parse_envelope(text)


def _parse_envelope(text: str) -> Envelope:
    m = _ENVELOPE.match(text)
    if m is None or (text[-1] != "]" and not text.rstrip().endswith("]")):
        idm = _ID_ONLY.match(text)
        head = text.lstrip()[1:].lstrip()[:1] if text.lstrip().startswith("[") else ""
        # ASCII digits only: str.isdigit() is also true for "²", which int() refuses
        details: dict[str, Any] = {"type": int(head)} if head in _DIGITS else {}
        readable_id = _unescape(idm.group(1)) if idm else None
        if readable_id is not None:
            details["id"] = readable_id
        raise FrameError(
            "not an OCPP-J frame: expected a JSON array [type, id, ...]", details=details
        )
    kind, raw_id, third = m.groups()
    msg_id = raw_id if "\\" not in raw_id else _unescape(raw_id)
    mtype = _TYPES.get(kind)
    if mtype is None:
        try:
            mtype = MessageType(int(kind))
        except ValueError:
            raise FrameError(
                f"unknown message type {kind[:10]}",
                code="MessageTypeNotSupported",
                details={"id": msg_id} if msg_id is not None else {},
            ) from None
    if msg_id is None:
        raise FrameError("message id is not a valid JSON string", details={"type": int(mtype)})
    if not msg_id or len(msg_id) > MAX_ID_LENGTH:
        raise FrameError(
            f"message id must be 1 to {MAX_ID_LENGTH} characters", details={"type": int(mtype)}
        )
    if third is None:
        if mtype in _NEEDS_THIRD:
            what = "error code" if mtype is MessageType.CALLERROR else "action"
            raise FrameError(
                f"{mtype.name} without an {what}", details={"id": msg_id, "type": int(mtype)}
            )
        return Envelope(mtype, msg_id, None)
    if mtype in _NO_THIRD:
        raise FrameError(
            f"{mtype.name} must carry an object payload",
            details={"id": msg_id, "type": int(mtype)},
        )
    action = third if "\\" not in third else _unescape(third)
    if action is None:
        raise FrameError(
            "action or error code is not a valid JSON string",
            details={"id": msg_id, "type": int(mtype)},
        )
    return Envelope(mtype, msg_id, action)


_NEEDS_THIRD = frozenset({MessageType.CALL, MessageType.SEND, MessageType.CALLERROR})
_NO_THIRD = frozenset({MessageType.CALLRESULT, MessageType.CALLRESULTERROR})
_COMPACT_KINDS.update({str(int(t)): (t, t in _NEEDS_THIRD) for t in MessageType})


def replace_id(text: str, new_id: str) -> str:
    """The same frame with another message id; every other byte is kept (replayed frames)."""
    m = _ENVELOPE.match(text)
    if m is None:
        raise FrameError("not an OCPP-J frame: expected a JSON array [type, id, ...]")
    quoted = _DUMP(new_id)
    return text[: m.start(2) - 1] + quoted + text[m.end(2) + 1 :]


_MEMBER_VALUE = re.compile(r"\s*:\s*(-?\d+)(?=\s*[,}])")


def swap_int_member(
    text: str, path: tuple[str, ...], mapping: dict[int, int]
) -> tuple[str, int] | None:
    """Rewrite one integer member of a frame's payload in place.

    `path` names the member from the payload object down (e.g. ``("transactionId",)`` or
    ``("csChargingProfiles", "transactionId")``). If that member holds an integer that is a
    key of `mapping`, returns the frame with only those digits replaced by the mapped value,
    every other byte as received, and the old value; otherwise None.
    """
    # Walk the JSON text: depth 1 is the frame array, 2 the payload object; strings are
    # skipped whole so that a key-like text inside a value never matches.
    keys: list[str | None] = []  # the member each open object/array was entered through
    pending_key: str | None = None
    depth = 0
    i, n = 0, len(text)
    target = len(path) + 1
    while i < n:
        c = text[i]
        if c == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            if end >= n:
                return None
            raw = text[i + 1 : end]
            i = end + 1
            m = _MEMBER_VALUE.match(text, i) if depth == target else None
            j = i
            while j < n and text[j] in " \t\r\n":
                j += 1
            is_key = j < n and text[j] == ":"
            if is_key:
                pending_key = _unescape(raw)
                if (
                    m is not None
                    and pending_key == path[-1]
                    and tuple(keys[2:]) == path[:-1]
                    and keys[:1] == [None]
                ):
                    old = int(m.group(1))
                    if old in mapping:
                        new = str(mapping[old])
                        return text[: m.start(1)] + new + text[m.end(1) :], old
            continue
        if c in "[{":
            keys.append(pending_key)
            pending_key = None
            depth += 1
        elif c in "]}":
            if keys:
                keys.pop()
            depth -= 1
        elif c == ",":
            pending_key = None
        i += 1
    return None


def decode(text: str) -> list[Any]:
    """Fully decode a frame (for the few actions HARMON-E watches or answers)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FrameError(f"invalid JSON: {exc}") from None
    if not isinstance(value, list) or len(value) < 3:
        raise FrameError("an OCPP-J frame is a JSON array of at least 3 elements")
    return value


def payload_of(frame: list[Any], env: Envelope) -> Any:
    """The payload element of a decoded frame."""
    if env.type in (MessageType.CALL, MessageType.SEND):
        return frame[3] if len(frame) > 3 else None
    if env.type is MessageType.CALLRESULT:
        return frame[2]
    return frame[4] if len(frame) > 4 else {}


_DUMP = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def call_frame(msg_id: str, action: str, payload: Any) -> str:
    return _DUMP([int(MessageType.CALL), msg_id, action, payload])


def call_result_frame(msg_id: str, payload: Any) -> str:
    return _DUMP([int(MessageType.CALLRESULT), msg_id, payload])


def call_error_frame(msg_id: str, code: str, description: str, details: Any = None) -> str:
    return _DUMP([int(MessageType.CALLERROR), msg_id, code, description[:255], details or {}])
