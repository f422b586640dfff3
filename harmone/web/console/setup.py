"""Wiring the console into the FastAPI application."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from harmone.errors import HarmoneError
from harmone.web.console import (
    routes_auth,
    routes_box,
    routes_charger_loadmgmt,
    routes_chargers,
    routes_loadmgmt,
    routes_sites,
    routes_users,
)
from harmone.web.console.auth import LoginRequired, PageError, optional_session
from harmone.web.console.ratelimit import LoginRateLimiter
from harmone.web.console.render import STATIC_DIR, render
from harmone.web.console.state import ConsoleSettings, ConsoleState
from harmone.web.http_errors import status_of
from harmone.web.runtime import RuntimeSource

__all__ = ["CONTENT_SECURITY_POLICY", "SecurityHeaders", "install"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Only this console's own files: no inline script, nothing from elsewhere, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)


class SecurityHeaders:
    """Adds hardening headers to console responses (the API's Swagger page loads its own
    scripts, so /api/ only gets the ones that cannot break it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "same-origin")
                if not path.startswith("/api/"):
                    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
                    headers.setdefault("X-Frame-Options", "DENY")
                    if path.startswith("/static/"):
                        # URLs carry a content hash (?v=...): safe to keep for a day.
                        headers.setdefault("Cache-Control", "public, max-age=86400")
                    else:
                        headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _is_page(request: Request) -> bool:
    return not request.url.path.startswith("/api/")


def install(api: FastAPI, settings: ConsoleSettings | None = None) -> None:
    """Add the console's routes, static files, error pages and headers to `api`."""
    settings = settings or ConsoleSettings()
    api.state.console = ConsoleState(settings, LoginRateLimiter(settings.login_limits))
    api.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    modules = (
        routes_auth,
        routes_sites,
        routes_chargers,
        routes_charger_loadmgmt,
        routes_loadmgmt,
        routes_users,
        routes_box,
    )
    for module in modules:
        api.include_router(module.router)
    api.add_middleware(SecurityHeaders)

    async def login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        if request.url.path.endswith("/events"):
            # 204 tells EventSource to stop retrying; the page then reloads into sign-in.
            return Response(status_code=204)
        return RedirectResponse(f"/login?next={quote(exc.next_url, safe='')}", status_code=303)

    async def page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return await _error_page(request, exc.status, exc.title, exc.message)

    api.add_exception_handler(LoginRequired, login_required)
    api.add_exception_handler(PageError, page_error)
    # Browsers get HTML error pages; /api/ keeps the application's JSON answers.
    for kind in (StarletteHTTPException, HarmoneError):
        api.add_exception_handler(kind, _html_for_pages(api.exception_handlers.get(kind)))


_TITLES = {403: "Not allowed", 404: "Page not found", 405: "Not allowed here"}
_MESSAGES = {
    404: "There is nothing at this address, or you do not have access to it.",
    405: "This page cannot be used that way.",
}


def _html_for_pages(previous: Any) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        if isinstance(exc, StarletteHTTPException):
            status, message = exc.status_code, str(exc.detail)
        else:
            assert isinstance(exc, HarmoneError)
            status, message = status_of(exc), str(exc)
        if _is_page(request) and status >= 400:
            return await _error_page(
                request,
                status,
                _TITLES.get(status, "Request refused"),
                _MESSAGES.get(status, message[:1].upper() + message[1:]),
            )
        if previous is None:  # pragma: no cover - the application registers one
            raise exc
        result = previous(request, exc)
        response: Response = await result if inspect.isawaitable(result) else result
        return response

    return handler


async def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    session = getattr(request.state, "console_session", None)
    source: RuntimeSource = request.app.state.harmone
    runtime = source.runtime
    if session is None and runtime is not None:
        # No route ran (an unknown address): look the session up for the navigation bar.
        session = await optional_session(request, runtime)
    return render(
        request,
        "error.html",
        {"status": status, "title": title, "message": message},
        session=session,
        status=status,
    )
