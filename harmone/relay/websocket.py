"""The relay's WebSocket connections, on picows: whole text messages in, text frames out.

picows parses frames in C and calls back synchronously, without a task, a queue or a future
per frame, which is what lets a Python relay keep up with a plain reverse proxy (see
docs/performance.md). It leaves the message level to its user, so `TextSocket` adds what OCPP-J
needs on top: fragmented messages reassembled within the size limit, UTF-8 checked (1007),
binary messages reported, the close handshake answered, permessage-deflate inflated for chargers
that negotiated it (HARMON-E itself sends uncompressed messages, which RFC 7692 allows), write
back-pressure reported, and the time of the last byte received kept for keep-alive pings.

`adopt_charger_transport` turns a TCP (or TLS) transport whose upgrade request HARMON-E has
already read and admitted into a picows server connection; `client_socket_factory` builds the
listener of a connection HARMON-E dials itself (upstream.py).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable
from typing import Any, Protocol

from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSProtocol  # type: ignore[attr-defined]

__all__ = ["Inflater", "SocketSink", "TextSocket", "WireLog", "adopt_charger_transport"]

log = logging.getLogger(__name__)

#: Initial read buffer per connection: OCPP frames are small; picows doubles it on demand.
READ_BUFFER = 2048
#: Seconds a peer gets to answer our close frame before its connection is dropped.
CLOSE_TIMEOUT = 2.0
_TAIL = b"\x00\x00\xff\xff"
# The message kinds as module constants: reading `WSMsgType.TEXT` goes through the enum's
# descriptor (a few hundred ns), and every frame is checked and sent with one.
_TEXT, _BINARY, _CONTINUATION, _CLOSE = (
    WSMsgType.TEXT,
    WSMsgType.BINARY,
    WSMsgType.CONTINUATION,
    WSMsgType.CLOSE,
)


class SocketSink(Protocol):
    """Who a `TextSocket` reports to (a charger link)."""

    def on_text(self, sock: TextSocket, text: str) -> None: ...

    def on_binary(self, sock: TextSocket) -> None: ...

    def on_closed(self, sock: TextSocket) -> None: ...

    def on_write_paused(self, sock: TextSocket, paused: bool) -> None: ...


class WireLog(logging.LoggerAdapter[logging.Logger]):
    """picows's own log lines, with the charger's context, kept out of the way: its parser
    errors (an oversized frame) become warnings, its per-connection chatter debug lines.

    An adapter rather than a logger also stops picows from creating a child `Logger` per
    connection, which the logging module would keep for ever.
    """

    def __init__(self, context: str) -> None:
        super().__init__(log, {})
        self.context = context

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        level = logging.WARNING if level >= logging.ERROR else logging.DEBUG
        if self.logger.isEnabledFor(level):
            kwargs.pop("exc_info", None)
            self.logger.log(level, "%s websocket: " + str(msg), self.context, *args, **kwargs)

    def isEnabledFor(self, level: int) -> bool:
        return self.logger.isEnabledFor(
            logging.WARNING if level >= logging.ERROR else logging.DEBUG
        )


class Inflater:
    """permessage-deflate (RFC 7692) for messages from a charger."""

    __slots__ = ("_limit", "_reset", "_z")

    def __init__(self, limit: int, no_context_takeover: bool) -> None:
        self._limit = limit
        self._reset = no_context_takeover
        self._z = zlib.decompressobj(-15)

    def inflate(self, data: bytes) -> bytes | None:
        """The message decompressed; None if it is over the size limit."""
        if self._reset:
            self._z = zlib.decompressobj(-15)
        out = self._z.decompress(data + _TAIL, self._limit + 1)
        if len(out) > self._limit or self._z.unconsumed_tail:
            return None
        return out


class TextSocket(WSListener):
    """One WebSocket connection as whole text messages (see module docstring)."""

    __slots__ = (
        "_abandoned",
        "_close_timer",
        "_early",
        "_fragment_kind",
        "_fragments",
        "_fragments_compressed",
        "_inflater",
        "_now",
        "_quiet_since",
        "_seen_received",
        "close_code",
        "close_reason",
        "closed",
        "max_message",
        "ping_sent_at",
        "received",
        "sink",
        "transport",
    )

    def __init__(
        self, max_message: int, now: Callable[[], float], inflater: Inflater | None = None
    ) -> None:
        self.transport: WSTransport | None = None
        self.sink: SocketSink | None = None
        self.max_message = max_message
        self._now = now
        self._inflater = inflater
        #: messages that arrived before a sink was attached (a CPMS that talks first)
        self._early: list[str] | None = None
        self._fragments: bytearray | None = None
        self._fragment_kind: WSMsgType | None = None
        self._fragments_compressed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = False
        #: frames received so far; the keep-alive sweep notices when it stops growing (a
        #: count costs less per frame than reading a clock)
        self.received = 0
        self._seen_received = -1
        self._quiet_since = now()
        #: when a keep-alive ping went out unanswered (None: none outstanding)
        self.ping_sent_at: float | None = None
        self._abandoned = False
        self._close_timer: asyncio.TimerHandle | None = None

    # -- picows callbacks --
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if not transport.is_client_side:
            # the handshake is over; the transport keeps both for ever: keep them small
            transport.request.headers.clear()
            transport.response.headers.clear()
        if self._abandoned:  # its dial was given up while the handshake was under way
            transport.disconnect(graceful=False)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self.received += 1
        kind = frame.msg_type
        if self._close_timer is not None and kind is not _CLOSE:
            return  # closing: only the peer's close frame matters now
        if kind is _TEXT and frame.fin and not frame.rsv1:
            try:
                text = frame.get_payload_as_utf8_text()
            except UnicodeDecodeError:
                self.close(1007, "text frame is not UTF-8")
                return
            sink = self.sink
            if sink is not None:
                sink.on_text(self, text)
            else:
                self._deliver(text)
            return
        if kind is _TEXT or kind is _BINARY:
            if self._fragment_kind is not None:
                self.close(1002, "new message inside a fragmented one")
                return
            self._fragment_kind = kind
            self._fragments_compressed = frame.rsv1
            self._fragments = bytearray()
            self._add_fragment(frame)
            return
        if kind is _CONTINUATION:
            if self._fragment_kind is None:
                self.close(1002, "continuation frame without a message")
                return
            self._add_fragment(frame)
            return
        if kind is _CLOSE:
            if self.close_code is None:
                code = frame.get_close_code()
                self.close_code = code.value if isinstance(code, WSCloseCode) else int(code)
                self.close_reason = frame.get_close_reason() or ""
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        # a PONG needs nothing more: it was counted as a frame received

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self.close_code is None:
            self.close_code = 1006
        if self.sink is not None:
            self.sink.on_closed(self)

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.on_write_paused(self, True)

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.on_write_paused(self, False)

    # -- for the link --
    def attach(self, sink: SocketSink) -> None:
        """Start reporting to `sink`, first what arrived before it was there."""
        self.sink = sink
        early, self._early = self._early, None
        for text in early or ():
            if self.sink is not sink:
                return
            sink.on_text(self, text)
        if self.closed:
            sink.on_closed(self)

    def send_text(self, text: str) -> bool:
        """Queue one text message; False if the connection is gone."""
        transport = self.transport
        if transport is None or self.closed or transport.is_close_frame_sent:
            return False
        transport.send(_TEXT, text)  # picows encodes it, in C
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake: send a close frame, then read (and drop) what the
        peer still sends until its close frame, and end the connection; after
        `CLOSE_TIMEOUT` seconds without it, end it anyway. (Closing at once would make the
        kernel answer the unread data with a reset, and the peer would never read the close
        frame and its code.)"""
        transport = self.transport
        if transport is None or self.closed:
            return
        if transport.is_close_frame_sent:
            return
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        transport.send_close(WSCloseCode(code), reason.encode()[:123])
        raw = transport.underlying_transport
        raw.resume_reading()
        self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)

    def abandon(self) -> None:
        """Nobody will use this connection: end it now, or as soon as it opens."""
        self._abandoned = True
        self.abort()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.disconnect(graceful=False)

    def quiet_for(self, now: float) -> float:
        """Seconds since a frame was last seen from the peer, as the keep-alive sweep (which
        calls this every few seconds) can tell; a pong answers the outstanding ping."""
        if self.received != self._seen_received:
            self._seen_received = self.received
            self._quiet_since = now
            self.ping_sent_at = None
        return now - self._quiet_since

    def ping(self, now: float) -> None:
        if self.transport is not None and not self.closed:
            self.ping_sent_at = now
            self.transport.send_ping()

    def pause_reading(self, paused: bool) -> None:
        if self.transport is None or self.closed:
            return
        raw = self.transport.underlying_transport
        if paused:
            raw.pause_reading()
        else:
            raw.resume_reading()

    @property
    def write_buffer_size(self) -> int:
        if self.transport is None or self.closed:
            return 0
        return int(self.transport.underlying_transport.get_write_buffer_size())

    # -- internals --
    def _add_fragment(self, frame: WSFrame) -> None:
        assert self._fragments is not None
        if self._fragment_kind is _TEXT:  # a binary message is only counted
            self._fragments += frame.get_payload_as_memoryview()
        if len(self._fragments) > self.max_message:
            self.close(1009, "message too big")
        elif frame.fin:
            kind, self._fragment_kind = self._fragment_kind, None
            if kind is _BINARY:
                self._fragments = None
                self._binary()
            else:
                self._finish_message()

    def _finish_message(self) -> None:
        data, self._fragments = self._fragments, None
        assert data is not None
        raw = bytes(data)
        if self._fragments_compressed:
            if self._inflater is None:
                self.close(1002, "compressed frame without permessage-deflate")
                return
            try:
                inflated = self._inflater.inflate(raw)
            except zlib.error:
                self.close(1007, "permessage-deflate data is corrupt")
                return
            if inflated is None:
                self.close(1009, "message too big")
                return
            raw = inflated
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.close(1007, "text frame is not UTF-8")
            return
        self._deliver(text)

    def _deliver(self, text: str) -> None:
        sink = self.sink
        if sink is not None:
            sink.on_text(self, text)
        elif self._early is None:
            self._early = [text]
        else:
            self._early.append(text)

    def _binary(self) -> None:
        if self.sink is not None:
            self.sink.on_binary(self)


def adopt_charger_transport(
    transport: Any,
    head: bytes,
    sock: TextSocket,
    headers: list[tuple[str, str]],
    *,
    max_frame: int,
    wire_log: WireLog,
) -> None:
    """Hand an admitted charger's transport to picows: it answers the (normalised) upgrade
    request `head` with 101, `headers` added, and from then on parses frames into `sock`."""

    def factory(_: object) -> WSUpgradeResponseWithListener:
        response = WSUpgradeResponse.create_101_response()
        for name, value in headers:
            response.headers[name] = value
        return WSUpgradeResponseWithListener(response, sock)

    protocol = WSProtocol(
        None,  # host and port: client side only
        None,  # path: client side only
        False,  # server side
        factory,
        wire_log,
        True,  # disconnect when a callback raises
        None,  # no handshake timeout: the head is already here
        False,  # keep-alive pings are sent by the registry's sweep, not a task per connection
        30.0,
        30.0,
        WSAutoPingStrategy.PING_WHEN_IDLE,
        True,  # answer pings
        max_frame,
        None,
        READ_BUFFER,
    )
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    buffer = protocol.get_buffer(-1)
    buffer[: len(head)] = head
    protocol.buffer_updated(len(head))
