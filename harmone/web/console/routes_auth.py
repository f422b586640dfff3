"""Sign-in and sign-out pages."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import RedirectResponse, Response

from harmone.errors import AuthError
from harmone.web.console.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    ConsoleSession,
    PageError,
    SessionDep,
    checked_form,
    clear_session_cookie,
    optional_session,
    safe_next,
    set_session_cookie,
)
from harmone.web.console.csrf import check_origin, new_login_token, tokens_match
from harmone.web.console.forms import field
from harmone.web.console.render import render
from harmone.web.console.state import console_state
from harmone.web.runtime import RuntimeDep

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

OptionalSession = Annotated[ConsoleSession | None, Depends(optional_session)]
WRONG_PASSWORD = "Wrong e-mail address or password. Check both and try again."
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def _insecure_transport(request: Request) -> bool:
    """Plain HTTP to anything but loopback: browsers will not send the Secure cookie back."""
    host = (request.url.hostname or "").lower()
    return request.url.scheme == "http" and not (
        host in _LOOPBACK or host == "::1" or host.startswith("127.")
    )


def _login_page(
    request: Request,
    *,
    next_url: str,
    email: str = "",
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    no_admin: bool = False,
) -> Response:
    token = new_login_token()
    response = render(
        request,
        "login.html",
        {
            "login_token": token,
            "next": next_url,
            "email": email,
            "error": error,
            "notice": notice,
            "insecure": _insecure_transport(request),
            "no_admin": no_admin,
        },
        session=None,
        status=status,
    )
    response.set_cookie(
        LOGIN_COOKIE, token, path="/", secure=True, httponly=True, samesite="strict"
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


@router.get("/")
async def home(session: OptionalSession) -> Response:
    return RedirectResponse("/sites" if session else "/login", status_code=303)


@router.get("/login")
async def login_form(
    request: Request,
    rt: RuntimeDep,
    session: OptionalSession,
    next_url: Annotated[str | None, Query(alias="next")] = None,
    bye: int = 0,
) -> Response:
    if session is not None:
        return RedirectResponse(safe_next(next_url), status_code=303)
    return _login_page(
        request,
        next_url=safe_next(next_url),
        notice="You are signed out." if bye else None,
        no_admin=not await rt.accounts.has_admin(),
    )


@router.post("/login")
async def login(request: Request, rt: RuntimeDep) -> Response:
    why = check_origin(request)
    if why is not None:
        raise PageError(403, "Request refused", f"This sign-in was refused because {why}.")
    form = await request.form()
    email = field(form, "email")
    next_url = safe_next(field(form, "next"))
    token = form.get("csrf_token")
    if not tokens_match(
        request.cookies.get(LOGIN_COOKIE), token if isinstance(token, str) else None
    ):
        return _login_page(
            request,
            next_url=next_url,
            email=email,
            error="This sign-in form had expired or your browser did not send its cookie. "
            "Please sign in again (cookies must be enabled).",
            status=403,
        )
    state = console_state(request)
    address = request.client.host if request.client else "unknown"
    wait = state.limiter.retry_after(email, address)
    if wait > 0:
        return _login_page(
            request,
            next_url=next_url,
            email=email,
            error="Too many failed sign-in attempts. " + state.limiter.describe(wait),
            status=429,
            headers={"Retry-After": str(int(wait) + 1)},
        )
    password = form.get("password")
    try:
        account_user = await rt.accounts.authenticate(
            email, password if isinstance(password, str) else ""
        )
    except AuthError:
        state.limiter.failed(email, address)
        return _login_page(
            request, next_url=next_url, email=email, error=WRONG_PASSWORD, status=401
        )
    state.limiter.succeeded(email)
    old = request.cookies.get(SESSION_COOKIE)
    if old:  # a new id on every sign-in: no session fixation
        await rt.accounts.delete_session(old)
    session_id = await rt.accounts.create_session(account_user.id, state.settings.session_lifetime)
    log.info("%s signed in from %s", account_user.email, address)
    response = RedirectResponse(next_url, status_code=303)
    set_session_cookie(response, session_id)
    response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.post("/logout")
async def logout(request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    await checked_form(request, session)
    await rt.accounts.delete_session(session.session_id)
    log.info("%s signed out", session.access.user.email)
    response = RedirectResponse("/login?bye=1", status_code=303)
    clear_session_cookie(response)
    return response
