"""The HTTP side of a charger's WebSocket handshake: reading the upgrade request, and the
bytes of a refusal. Pure functions over bytes and strings; no sockets.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from http import HTTPStatus

__all__ = [
    "MAX_HEAD_BYTES",
    "UpgradeRequest",
    "deflate_agreement",
    "parse_head",
    "refusal",
    "upgrade_problem",
]

#: A request head larger than this is refused (431): OCPP handshakes are a few hundred bytes.
MAX_HEAD_BYTES = 16384


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """A request head: method, target (the raw path, percent-encoding kept) and headers
    (names lower-cased, in order, repeated names kept)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def tokens(self, name: str) -> list[str]:
        """The comma-separated values of every `name` header, in order."""
        out: list[str] = []
        for key, value in self.headers:
            if key == name:
                out.extend(v.strip() for v in value.split(",") if v.strip())
        return out

    @property
    def is_websocket(self) -> bool:
        return (self.header("upgrade") or "").strip().lower() == "websocket"


def parse_head(head: bytes) -> UpgradeRequest | None:
    """The request in `head` (up to, not including, the blank line); None if it is not an
    HTTP/1.1 request head."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return None
        headers.append((name.lower(), value.strip()))
    return UpgradeRequest(parts[0], parts[1], tuple(headers))


def upgrade_problem(request: UpgradeRequest) -> tuple[int, str] | None:
    """What makes `request` an invalid WebSocket upgrade (RFC 6455 §4.2.1), as an HTTP
    status and a reason; None if it is a valid one."""
    if request.method != "GET":
        return 405, f"a WebSocket handshake is a GET request, not {request.method[:10]}"
    if "upgrade" not in (t.lower() for t in request.tokens("connection")):
        return 400, "the handshake lacks 'Connection: Upgrade'"
    if request.header("sec-websocket-version") != "13":
        return 426, "the charger must use WebSocket version 13"
    key = request.header("sec-websocket-key") or ""
    try:
        if len(base64.b64decode(key.encode("ascii"), validate=True)) != 16:
            raise ValueError(key)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        return 400, "the handshake's Sec-WebSocket-Key is not 16 bytes in base64"
    return None


def deflate_agreement(request: UpgradeRequest) -> tuple[str, bool] | None:
    """The Sec-WebSocket-Extensions answer to a charger offering permessage-deflate (RFC
    7692), and whether the charger resets its compression context per message; None if it
    offers none HARMON-E accepts.

    HARMON-E sends its own messages uncompressed (allowed by RFC 7692), so only the
    charger's compression parameters matter: any window size is inflated with a 32 KiB
    window, and the charger may keep its context unless it offered not to.
    """
    for offer in request.tokens("sec-websocket-extensions"):
        # tokens() split on commas; an offer is "permessage-deflate; param; param=value"
        name, *params = (p.strip() for p in offer.split(";"))
        if name.lower() != "permessage-deflate":
            continue
        names = [p.split("=", 1)[0].strip().lower() for p in params if p]
        if any(
            n not in ("client_no_context_takeover", "server_no_context_takeover")
            and n not in ("client_max_window_bits", "server_max_window_bits")
            for n in names
        ):
            continue
        answer = ["permessage-deflate"]
        if "server_no_context_takeover" in names:
            answer.append("server_no_context_takeover")
        if "server_max_window_bits" in names:
            # only meaningful for messages HARMON-E would compress; echo what was asked
            value = next(p for p in params if p.lower().startswith("server_max_window_bits"))
            answer.append(value)
        reset = "client_no_context_takeover" in names
        if reset:
            answer.append("client_no_context_takeover")
        return "; ".join(answer), reset
    return None


def refusal(status: int, body: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete HTTP response refusing the handshake; the connection closes after it."""
    payload = (body + "\n").encode()
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Refused"
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(payload)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + payload
