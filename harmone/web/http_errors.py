"""HARMON-E's errors as HTTP answers, in one place: `{"detail": "one readable sentence"}`.

| error                                   | status |
|-----------------------------------------|--------|
| a body or parameter that fails its schema, ConfigError (InvalidFields) | 422 |
| AuthError                               | 401 (with `WWW-Authenticate: Bearer`) |
| Forbidden                               | 403 |
| NotFound                                | 404 |
| Conflict, ChargerNotConnected           | 409 |
| CallErrorReceived (the charger's CallError) | 502 |
| CallTimeout                             | 504 |
| any other HarmoneError                  | 400 |

The console adds HTML pages for browsers on top (`harmone.web.console.setup`).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from harmone.errors import (
    AuthError,
    CallErrorReceived,
    CallTimeout,
    ChargerNotConnected,
    ConfigError,
    Conflict,
    Forbidden,
    HarmoneError,
    NotFound,
)

__all__ = ["describe_validation", "install_error_handlers", "status_of"]

log = logging.getLogger(__name__)

_STATUS: tuple[tuple[type[HarmoneError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (ChargerNotConnected, 409),
    (CallErrorReceived, 502),
    (CallTimeout, 504),
    (AuthError, 401),
    (Forbidden, 403),
    (ConfigError, 422),
    (HarmoneError, 400),
)


def status_of(exc: HarmoneError) -> int:
    """The HTTP status of one of HARMON-E's errors."""
    return next(code for kind, code in _STATUS if isinstance(exc, kind))


def describe_validation(exc: RequestValidationError) -> str:
    """One readable sentence per problem, e.g. "cpms_url: must start with ws://"."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        msg = str(err.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            loc, msg = "body", "is not valid JSON"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_validation(exc)}, status_code=422)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @api.exception_handler(HarmoneError)
    async def harmone_error(_: Request, exc: HarmoneError) -> JSONResponse:
        code = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
        return JSONResponse({"detail": str(exc)}, status_code=code, headers=headers)
