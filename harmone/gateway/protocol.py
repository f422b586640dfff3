"""The box <-> cloud link's wire format: JSON text messages over one WebSocket.

Two reusable pieces (issue 13 can carry them between nodes unchanged):

* **Config down as versioned snapshots.** The cloud sends the whole configuration of a site
  (`config`: `version`, `snapshot`); the box stores it, applies it and answers `applied`.
  A snapshot replaces the previous one; versions only grow; `digest` says whether anything
  changed, so a version is spent only on a real change.
* **Events up in an acknowledged outbox.** The box sends `events` (`seq`, `kind`, `data`)
  in sequence order; the cloud applies each number once (it skips numbers it has seen) and
  answers `ack` with the highest applied; the box deletes up to it and, after a reconnect,
  resends from there.

Messages, box -> cloud: `hello` (software_version, config_version, fingerprint, started_at,
now, backlog), `events` (events, backlog), `applied` (version), `status` (backlog, now).
Cloud -> box: `welcome` (acked, now), `config` (version, snapshot), `ack` (seq), and, to
a box it will not serve, `refused` (detail) before closing; to a pairing box, `paired`
(gateway_id, credential, site_uid, snapshot).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["LINK_PATH", "REFUSED_CLOSE", "REVOKED_CLOSE", "decode", "digest", "encode"]

#: Where the box opens its link (WebSocket), and exchanges its pairing code too.
LINK_PATH = "/api/v1/gateway/link"
#: Close code of a link whose box was revoked (4000-4999: private use, RFC 6455).
REVOKED_CLOSE = 4403
#: Close code after a `refused` message (a bad pairing code or credential).
REFUSED_CLOSE = 4401


def encode(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


def decode(text: str | bytes) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ValueError("a link message is a JSON object with a 'type'")
    return value


def digest(value: Mapping[str, Any] | Any) -> str:
    """SHA-256 of the canonical JSON of `value` (what 'unchanged' means for a snapshot)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
