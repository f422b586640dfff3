"""CSRF protection for the console's forms.

Two checks on every state-changing request (POST):

1. A token in the form: for a signed-in user, an HMAC of their session id (so it changes
   with every sign-in and cannot be derived from the database, which holds only the SHA-256
   of the id); for the sign-in form itself, a random value that must match a cookie set with
   the form (double submit), which stops "login CSRF" into an attacker's account.
2. The browser's own word on where the request comes from: `Sec-Fetch-Site` must not be
   cross-site or same-site, and `Origin`, when sent, must name this host.

The REST API needs neither: it authenticates with a bearer token that a browser never adds
by itself.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = ["check_origin", "new_login_token", "session_token", "tokens_match"]

log = logging.getLogger(__name__)


def session_token(session_id: str) -> str:
    """The CSRF token of a signed-in session."""
    return hmac.new(session_id.encode("utf-8"), b"harmone-console-csrf", hashlib.sha256).hexdigest()


def new_login_token() -> str:
    """A random token for the sign-in form and its cookie."""
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; absent or empty tokens never match."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def check_origin(request: Request) -> str | None:
    """Why this request does not come from a page of this console, or None if it does."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site in ("cross-site", "same-site"):
        return f"the request came from another site ({fetch_site})"
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
            return f"the request came from {origin}, not from this console"
    return None
