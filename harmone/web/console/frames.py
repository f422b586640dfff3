"""What the message inspector shows of each OCPP frame.

The relay keeps frames as the exact text exchanged; here, off the hot path, each one is
decoded once for display: message type, id, action (a CallResult or CallError carries no
action, so it is taken from the Call with the same id earlier in the buffer) and the payload
pretty-printed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from harmone.relay.state import FrameRecord

__all__ = ["describe_frames"]

log = logging.getLogger(__name__)

_KINDS = {2: "Call", 3: "CallResult", 4: "CallError", 5: "CallResultError", 6: "Send"}
_PREVIEW = 140


def _payload(kind: str, frame: list[Any]) -> Any:
    if kind in ("Call", "Send"):
        return frame[3] if len(frame) > 3 else None
    if kind == "CallResult":
        return frame[2] if len(frame) > 2 else None
    # CallError: [4, id, code, description, details]
    return {
        "errorCode": frame[2] if len(frame) > 2 else None,
        "errorDescription": frame[3] if len(frame) > 3 else None,
        "errorDetails": frame[4] if len(frame) > 4 else None,
    }


def describe_frames(frames: Iterable[FrameRecord]) -> list[dict[str, Any]]:
    """One JSON-ready dict per frame, in order: at (epoch s), time (ISO 8601 UTC), sender,
    receiver, kind, id, action, body (pretty JSON, or the raw text if it is not JSON) and
    preview (one short line)."""
    actions: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for f in frames:
        kind, msg_id, action = "Unreadable", None, None
        body = f.text
        try:
            frame = json.loads(f.text)
        except (ValueError, RecursionError):  # a charger may send 100,000 nested arrays
            frame = None
        if isinstance(frame, list) and frame and isinstance(frame[0], int):
            kind = _KINDS.get(frame[0], f"Type {frame[0]}")
            msg_id = str(frame[1]) if len(frame) > 1 else None
            if kind in ("Call", "Send") and len(frame) > 2 and isinstance(frame[2], str):
                action = frame[2]
                if msg_id is not None:
                    actions[msg_id] = action
            elif msg_id is not None:
                action = actions.get(msg_id)
            payload = _payload(kind, frame)
            try:
                body = json.dumps(payload, indent=2, ensure_ascii=False)
                preview = json.dumps(payload, separators=(", ", ": "), ensure_ascii=False)
            except RecursionError:  # nested nearly as deep as json.loads allows
                preview = f.text
        else:
            preview = f.text
        out.append(
            {
                "at": f.at,
                "time": datetime.fromtimestamp(f.at, UTC).isoformat().replace("+00:00", "Z"),
                "sender": f.sender,
                "receiver": f.receiver,
                "kind": kind,
                "id": msg_id,
                "action": action,
                "body": body,
                "preview": preview if len(preview) <= _PREVIEW else preview[: _PREVIEW - 1] + "…",
            }
        )
    return out
