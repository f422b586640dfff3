"""Console sign-in state: the session cookie, who is signed in, and the CSRF check.

The session id is 256 random bits in a `__Host-` cookie (Secure, HttpOnly, SameSite=Lax,
Path=/, no Domain: the browser refuses to let any other origin set or read it); the
database keeps only its SHA-256 (see `Accounts.session_account`). Chromium, Firefox and Safari
treat http://127.0.0.1 and http://localhost as secure contexts, so Secure cookies work there
without TLS; anywhere else the console must be served over HTTPS (docs/console.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from harmone.web.access import Access
from harmone.web.console.csrf import check_origin, session_token, tokens_match
from harmone.web.console.state import console_state
from harmone.web.runtime import RuntimeDep

__all__ = [
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "ConsoleSession",
    "LoginRequired",
    "PageError",
    "SessionDep",
    "checked_form",
    "clear_session_cookie",
    "optional_session",
    "safe_next",
    "set_session_cookie",
]

log = logging.getLogger(__name__)

SESSION_COOKIE = "__Host-harmone_session"
LOGIN_COOKIE = "__Host-harmone_login"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in console user: what they may do and the CSRF token of their forms."""

    access: Access
    session_id: str
    csrf: str


class LoginRequired(Exception):
    """No valid session: the browser is sent to the sign-in page, then back to `next_url`."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class PageError(Exception):
    """A page that cannot be shown, rendered as an HTML error page with this status."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def safe_next(value: str | None) -> str:
    """A same-site path to return to after sign-in; anything else becomes /sites."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/sites"
    if any(c in value for c in "\r\n") or value.startswith(("/login", "/logout")):
        return "/sites"
    return value


def set_session_cookie(response: Response, session_id: str) -> None:
    # No Max-Age: the cookie ends with the browser; the server also ends it (lifetime, idle).
    response.set_cookie(
        SESSION_COOKIE, session_id, path="/", secure=True, httponly=True, samesite="lax"
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="lax")


async def optional_session(request: Request, rt: RuntimeDep) -> ConsoleSession | None:
    """The signed-in user of this request, or None."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    settings = console_state(request).settings
    account = await rt.accounts.session_account(session_id, settings.session_idle)
    if account is None:
        return None
    session = ConsoleSession(Access.of(account), session_id, session_token(session_id))
    request.state.console_session = session  # for error pages rendered by exception handlers
    return session


async def console_session(
    request: Request, session: Annotated[ConsoleSession | None, Depends(optional_session)]
) -> ConsoleSession:
    """The signed-in user; LoginRequired (a redirect to the sign-in page) otherwise."""
    if session is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(quote(target, safe="/?=&-_.~%"))
    return session


SessionDep = Annotated[ConsoleSession, Depends(console_session)]


async def checked_form(request: Request, session: ConsoleSession) -> FormData:
    """The submitted form, after the CSRF checks (PageError 403 when they fail)."""
    why = check_origin(request)
    form = await request.form()
    given = form.get("csrf_token")
    if why is None and not tokens_match(session.csrf, given if isinstance(given, str) else None):
        why = "the form's security token is missing or out of date"
    if why is not None:
        log.warning(
            "refused %s %s for %s: %s",
            request.method,
            request.url.path,
            session.access.user.email,
            why,
        )
        raise PageError(
            403,
            "Request refused",
            f"This request was refused because {why}. Reload the page and try again.",
        )
    return form
