"""One listening port for everything: WebSocket upgrades go to the OCPP relay, the rest to
uvicorn's HTTP protocol.

`FrontDoor` is the protocol uvicorn creates for each accepted connection. It reads the first
request head (with the slowloris deadline, `head_timeout`), and then hands the transport over:
a WebSocket upgrade (the console uses server-sent events, so every upgrade on this port is a
charger) to `OcppEndpoint.handshake`, which answers it with an HTTP refusal or hands the
connection to picows; anything else, with the bytes read so far, to `HeadDeadlineProtocol`
(uvicorn's h11 protocol), which serves the REST API and the console for the rest of that
connection. OCPP frames thus never pass through ASGI messages, queues or flow control.
The one exception is a gateway box's link (`harmone.gateway.protocol.LINK_PATH`), a WebSocket
served by the ASGI app (`harmone.web.api.gateways`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from harmone.gateway.protocol import LINK_PATH
from harmone.relay.endpoint import OcppEndpoint
from harmone.relay.upgrade import MAX_HEAD_BYTES, parse_head, refusal
from harmone.web.head_deadline import HeadDeadlineProtocol

__all__ = ["FrontDoor", "front_door_for"]

log = logging.getLogger(__name__)


class FrontDoor(asyncio.Protocol):
    """See the module docstring; `front_door_for` makes the class uvicorn instantiates."""

    #: The OCPP endpoint, or None while HARMON-E starts or stops.
    endpoint: Callable[[], OcppEndpoint | None] = staticmethod(lambda: None)

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._http_args = (config, server_state, app_state, _loop)
        self._server_state = server_state
        self._loop = _loop or asyncio.get_event_loop()
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._handshake: asyncio.Task[None] | None = None

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one
        self._transport = transport  # type: ignore[assignment]
        # uvicorn closes what is in here when it shuts down
        self._server_state.connections.add(self)
        self._timer = self._loop.call_later(self.head_timeout, self._too_slow)

    @property
    def head_timeout(self) -> float:
        """The same deadline as for later request heads on a kept-alive connection."""
        return HeadDeadlineProtocol.head_timeout

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self._handshake is not None:
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                self._refuse(431, "request head too large")
            return
        request = parse_head(bytes(self._buffer[:end]))
        if request is None or not request.is_websocket:
            self._to_http(transport)
            return
        if request.target.partition("?")[0] == LINK_PATH:
            # A gateway box's link (issue 12), not a charger: served by the ASGI app
            # through uvicorn's WebSocket protocol (the `websockets` library's sans-I/O core).
            self._to_http(transport, WebSocketsSansIOProtocol)
            return
        self._stop_timer()
        endpoint = type(self).endpoint()
        if endpoint is None:
            self._refuse(503, "HARMON-E is starting or stopping; try again")
            return
        transport.pause_reading()
        self._buffer = bytearray()
        peer = transport.get_extra_info("peername")
        remote = str(peer[0]) if isinstance(peer, tuple) and peer else None
        self._handshake = self._loop.create_task(self._ocpp(endpoint, request, remote))

    def eof_received(self) -> bool | None:
        return False  # close: a half-sent request head will not be completed

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._server_state.connections.discard(self)
        if self._handshake is not None and not self._handshake.done():
            self._handshake.cancel()
        self._transport = None

    # -- uvicorn's shutdown --
    def shutdown(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- internals --
    async def _ocpp(self, endpoint: OcppEndpoint, request: Any, remote: str | None) -> None:
        transport = self._transport
        assert transport is not None
        try:
            await endpoint.handshake(request, transport, remote)
        except Exception:
            log.exception("OCPP handshake from %s failed", remote)
            if not transport.is_closing():
                transport.write(refusal(500, "HARMON-E failed to answer this handshake"))
                transport.close()
        finally:
            # From here on the connection is the relay's (or closed): uvicorn's shutdown
            # does not wait for it; the registry closes chargers when HARMON-E stops.
            self._server_state.connections.discard(self)

    def _to_http(
        self,
        transport: asyncio.Transport,
        protocol: type[HeadDeadlineProtocol | WebSocketsSansIOProtocol] | None = None,
    ) -> None:
        self._stop_timer()
        self._server_state.connections.discard(self)
        http = (protocol or HeadDeadlineProtocol)(*self._http_args)
        data, self._buffer = bytes(self._buffer), bytearray()
        transport.set_protocol(http)
        http.connection_made(transport)
        http.data_received(data)
        self._transport = None

    def _refuse(self, status: int, reason: str) -> None:
        if self._transport is not None:
            self._transport.write(refusal(status, reason))
            self._transport.close()

    def _too_slow(self) -> None:
        self._timer = None
        if self._transport is None or self._handshake is not None:
            return
        peer = self._transport.get_extra_info("peername")
        log.info(
            "closing connection from %s: no complete request head within %g s",
            f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) > 1 else "?",
            self.head_timeout,
        )
        self._transport.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def front_door_for(endpoint: Callable[[], OcppEndpoint | None]) -> type[FrontDoor]:
    """The protocol class for one server, finding its OCPP endpoint through `endpoint`."""
    return type("FrontDoor", (FrontDoor,), {"endpoint": staticmethod(endpoint)})
