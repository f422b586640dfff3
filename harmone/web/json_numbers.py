"""Every JSON request body with a number that is not finite is refused, before any handler.

Python's JSON parser (and so FastAPI's) reads `NaN`, `Infinity` and `-Infinity`, which JSON
does not have, and turns `1e999` into infinity; pydantic's float fields then accept them. One
such value in a limit or a reading would poison every calculation after it (a NaN compares
false with everything), so no API body may carry one: they are answered with 422 and the
usual `{"detail": "…"}` here, whichever router the request is for.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["FiniteJsonNumbers", "NonFiniteNumber", "check_finite_json"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class NonFiniteNumber(ValueError):
    """A JSON number that is NaN or infinite (as written, e.g. "NaN" or "1e999")."""


def _constant(text: str) -> float:
    raise NonFiniteNumber(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumber(text)
    return value


def check_finite_json(body: bytes) -> None:
    """NonFiniteNumber if `body` is JSON holding a number that is not finite; a body that is
    not JSON at all is left to the application (it answers that itself)."""
    try:
        json.loads(body, parse_constant=_constant, parse_float=_float)
    except NonFiniteNumber:
        raise
    except (ValueError, RecursionError):
        return


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers") or []:
        if name == b"content-type":
            media = bytes(value).split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


class FiniteJsonNumbers:
    """ASGI middleware: reads a JSON request body, checks it, and hands it on unchanged."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        # The body is small: the application is wrapped in a cap on body sizes (BodyLimit).
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            check_finite_json(body)
        except NonFiniteNumber as exc:
            log.info("refused %s %s: non-finite number %s", scope["method"], scope["path"], exc)
            await _refuse(send, str(exc))
            return
        await self.app(scope, _replay([{"type": "http.request", "body": body}], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _refuse(send: Send, number: str) -> None:
    detail = (
        f"body: {number[:40]} is not a number HARMON-E accepts: numbers must be finite "
        "(NaN, Infinity and numbers beyond ±1.8e308 are refused)"
    )
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
