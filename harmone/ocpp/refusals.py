"""The CallErrors HARMON-E answers in place of a peer: a broken frame, an answer it could not
store. Pure functions of the session's values (`harmone.ocpp.session` and the relay use them).
"""

from __future__ import annotations

import logging

from harmone.errors import FrameError
from harmone.ocpp.effects import Effect, Note, ToCharger, ToCpms
from harmone.ocpp.framing import MessageType, call_error_frame, parse_envelope
from harmone.ocpp.versions import OcppVersion, error_code

__all__ = ["broken_frame", "not_stored"]

_ANSWERS = (MessageType.CALLRESULT, MessageType.CALLERROR, MessageType.CALLRESULTERROR)


def broken_frame(
    version: OcppVersion,
    text: str,
    exc: FrameError,
    sender: str,
    reply: type[ToCharger] | type[ToCpms],
) -> list[Effect]:
    """What a malformed frame from `sender` gets: a log line, and a CallError (`reply`, to the
    sender) when it may have been a call."""
    snippet = text[:80] + ("…" if len(text) > 80 else "")
    effects: list[Effect] = [
        Note(
            logging.WARNING,
            f"malformed frame from the {sender} not relayed ({exc.description}): {snippet!r}",
        )
    ]
    details = exc.details if isinstance(exc.details, dict) else {}
    # An answer cannot be answered; anything that may have been a call gets a CallError.
    if details.get("type") in _ANSWERS:
        return effects
    # An id we could not read is answered as "-1" (OCPP 2.x Part 4 §4.2.3).
    msg_id = str(details.get("id", "-1"))
    if exc.code == "MessageTypeNotSupported":
        kind = "message_type_not_supported"
    else:
        kind = "format" if "id" in details else "rpc_framework"
    effects.append(reply(call_error_frame(msg_id, error_code(version, kind), exc.description)))
    return effects


def not_stored(version: OcppVersion, answer: str) -> ToCharger:
    """In place of the local `answer` to a call the offline journal could not store: a
    CallError, so that the charger sends the call again later rather than believe it was
    taken care of."""
    return ToCharger(
        call_error_frame(
            parse_envelope(answer).id,
            error_code(version, "internal"),
            "HARMON-E could not store this message; send it again later",
        )
    )
