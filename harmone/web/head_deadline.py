"""A deadline for each HTTP request head: the guard against slowloris clients.

uvicorn's HTTP/1.1 protocol (h11) has no such timeout: a client that opens a TCP connection and
sends nothing, or sends its upgrade request one byte per second, holds a connection and a file
descriptor for as long as it likes (its keep-alive timer only runs *between* requests and any
byte cancels it). A few thousand such clients exhaust the descriptors and lock out every charger.
`HeadDeadlineProtocol` closes a connection whose request head (request line and headers,
including a WebSocket upgrade request) is not complete within `head_timeout` seconds of the
connection opening or of the previous response ending. Bodies and open WebSockets are not
affected: the deadline stops as soon as the head is in.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["DEFAULT_HEAD_TIMEOUT", "HeadDeadlineProtocol"]

log = logging.getLogger(__name__)

#: Seconds a client gets to send a complete request head.
DEFAULT_HEAD_TIMEOUT = 10.0


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head is too slow to arrive."""

    head_timeout: float = DEFAULT_HEAD_TIMEOUT

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # A complete head moves h11 off IDLE (to SEND_BODY, DONE or a protocol switch); a
        # WebSocket upgrade hands the transport to another protocol altogether.
        if self.conn.their_state is not h11.IDLE or self.transport.get_protocol() is not self:
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # keep-alive: the next request head has a deadline too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.info(
            "closing connection from %s: no complete request head within %g s",
            client,
            self.head_timeout,
        )
        self.transport.close()
