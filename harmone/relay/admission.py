"""Pure decisions taken at a charger's WebSocket handshake.

Each refusal carries an HTTP status and a reason written for a support person, because the
connection log is where "the charger does not connect" gets answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = [
    "MAX_IDENTITY_LENGTH",
    "Refusal",
    "choose_subprotocol",
    "identity_problem",
    "no_identity_refusal",
    "restrict_to_identity",
    "split_ocpp_path",
]

#: OCPP 2.0.1 Part 4 and common 1.6 practice: identity is an identifierString of ≤ 48 chars.
MAX_IDENTITY_LENGTH = 48
#: OCPP 2.x identifierString (Part 2, data types), less ':' (refused for every version).
_IDENTIFIER_STRING = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789*-_=+|@."
)
#: What to set on a charger that offers no version HARMON-E relays.
_VERSION_ADVICE = (
    "set the charger's OCPP protocol to OCPP-J 1.6 (JSON over WebSocket), 2.0.1 or 2.1"
)


@dataclass(frozen=True, slots=True)
class Refusal(Exception):
    """A handshake refusal: the HTTP status to answer with and why, in plain words."""

    status: int
    reason: str
    #: Extra response headers, e.g. WWW-Authenticate on a 401.
    headers: tuple[tuple[str, str], ...] = ()
    #: What the charger is told when it must be less than the log says; None: the reason.
    answer: str | None = None

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.reason}"


def split_ocpp_path(raw_path: str) -> tuple[str, str]:
    """Split `/{site-UID}/{chargePointId}` into its parts.

    The identity is returned exactly as received (percent-encoding kept), so that the CPMS
    sees the same URL path a direct connection would have shown it. Raises Refusal.
    """
    path = raw_path.split("?", 1)[0]
    parts = path.strip("/").split("/") if path.strip("/") else []
    if not parts:
        raise Refusal(404, "no site in the URL: use the OCPP URL from the site's Control Hub")
    if len(parts) == 1:
        raise no_identity_refusal(parts[0], site_known=True)
    if len(parts) > 2:
        raise Refusal(
            404,
            f"unexpected extra path segments in {path!r}: the OCPP URL must be pasted "
            "unchanged, with only the charger's identity appended",
        )
    site_uid, identity = parts
    problem = identity_problem(identity)
    if problem:
        raise Refusal(400, f"invalid charge point identity {identity!r}: {problem}")
    return site_uid, identity


def no_identity_refusal(segment: str, *, site_known: bool) -> Refusal:
    """The refusal of a URL with one path segment: a site UID without the charger's id, or,
    when `segment` is no site UID, a charger id without the site UID."""
    if site_known:
        return Refusal(
            404,
            "no charge point identity after the site UID: the charger must append its own "
            "id to the OCPP URL (URL/{chargePointId}); check the URL in the charger",
        )
    return Refusal(
        404,
        f"no site UID in the URL: the charger connected to /{segment[:60]}, but the OCPP URL "
        "must be the site's URL (…/{site-UID}) with the charger's id appended; copy it "
        "from the site's Control Hub",
    )


def identity_problem(identity: str) -> str | None:
    """What is wrong with a charge point identity (as received) for every OCPP version, or
    None. These refusals protect HARMON-E (and HTTP Basic); OCPP 1.6 otherwise lets an
    identity hold any character, percent-encoded in the URL (see `restrict_to_identity`)."""
    try:
        decoded = unquote(identity, errors="strict")
    except UnicodeDecodeError:
        return "its percent-encoding is not valid UTF-8"
    if not decoded:
        return "it is empty"
    if len(decoded) > MAX_IDENTITY_LENGTH:
        return f"longer than {MAX_IDENTITY_LENGTH} characters"
    if ":" in decoded:
        return "it contains ':', which OCPP forbids (it breaks HTTP Basic authentication)"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        return "it contains control characters"
    if "/" in decoded:
        return "it contains '/'"
    return None


def restrict_to_identity(usable: list[str], identity: str) -> list[str]:
    """The offered versions this identity may use: OCPP 2.x requires an identifierString
    (letters, digits and `*-_=+|@.`); 1.6 takes any identity, relayed as received.

    Raises Refusal (400) when none is left.
    """
    decoded = unquote(identity)
    if all(c in _IDENTIFIER_STRING for c in decoded):
        return usable
    allowed = [p for p in usable if p == "ocpp1.6"]
    if allowed:
        return allowed
    bad = sorted({c for c in decoded if c not in _IDENTIFIER_STRING})
    shown = ", ".join(repr(c) for c in bad[:5])
    raise Refusal(
        400,
        f"invalid charge point identity {identity!r} for OCPP 2.x: it contains {shown}; "
        "OCPP 2.x allows only letters, digits and * - _ = + | @ . (an identifierString)",
    )


def choose_subprotocol(offered: Sequence[str], supported: Sequence[str]) -> list[str]:
    """The charger's offered subprotocols that HARMON-E relays, in the charger's order.

    Raises Refusal when there is none, naming what the charger did offer.
    """
    usable = [p for p in offered if p in supported]
    if usable:
        return usable
    if not offered:
        raise Refusal(
            400,
            "the charger offered no OCPP version (no Sec-WebSocket-Protocol header); "
            f"HARMON-E needs one of {', '.join(supported)}: " + _VERSION_ADVICE,
        )
    shown = ", ".join(offered[:5])
    raise Refusal(
        400,
        f"the charger offered only {shown}; HARMON-E relays {', '.join(supported)}: "
        + _VERSION_ADVICE,
    )
