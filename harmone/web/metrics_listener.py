"""`--metrics-listen HOST:PORT`: `/metrics` on an address of its own, without authentication.

For a Prometheus that scrapes over a private network or from the same host, where a token
would only be a secret to rotate. It serves `GET /metrics` and nothing else (404), in plain
HTTP, from the same numbers as `/metrics` on the API port.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

from harmone.services.metrics import CONTENT_TYPE
from harmone.web.runtime import RuntimeSource

__all__ = ["MetricsListener", "metrics_server_config"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class MetricsListener:
    """A bare ASGI application: the metrics of `source`'s running HARMON-E."""

    def __init__(self, source: RuntimeSource) -> None:
        self._source = source

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        if scope["path"] != "/metrics":
            await _answer(send, 404, b"not found: the metrics are at /metrics\n")
            return
        if method not in ("GET", "HEAD"):
            await _answer(send, 405, b"method not allowed: use GET\n", [(b"allow", b"GET")])
            return
        runtime = self._source.runtime
        if runtime is None:
            await _answer(send, 503, b"HARMON-E is starting\n")
            return
        body = await runtime.metrics.scrape()
        await _answer(
            send, 200, body if method == "GET" else b"", content_type=CONTENT_TYPE.encode()
        )


async def _answer(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = b"text/plain; charset=utf-8",
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


def metrics_server_config(source: RuntimeSource) -> uvicorn.Config:
    """uvicorn's settings for the metrics listener (its socket is bound by the caller)."""
    return uvicorn.Config(
        MetricsListener(source),
        lifespan="off",
        http="h11",
        ws="none",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=1,
    )
