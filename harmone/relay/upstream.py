"""Dialling a charger's CPMS, with failures sorted into what the charger should be told."""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from picows import WSError, WSHandshakeError, WSInvalidURL, ws_connect

from harmone.errors import UpstreamUnavailable
from harmone.relay.websocket import READ_BUFFER, TextSocket, WireLog

__all__ = ["CpmsConnection", "UpstreamRefused", "cpms_endpoint", "dial", "tls_context"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UpstreamRefused(Exception):
    """The CPMS answered the handshake with an HTTP status other than 101."""

    status: int

    def __str__(self) -> str:
        return f"CPMS refused the connection: HTTP {self.status}"


@dataclass(frozen=True, slots=True)
class CpmsConnection:
    """An open CPMS connection: its socket and the subprotocol the CPMS chose (None if it
    confirmed none)."""

    sock: TextSocket
    subprotocol: str | None


@functools.cache
def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The client context for wss:// CPMS URLs: certificate and host name verified against
    `ca_file`, or the system's trust store when None.

    Cached: loading the system store costs milliseconds, and thousands of chargers may dial
    at once after a restart.
    """
    return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)


def cpms_endpoint(cpms_url: str, identity: str) -> str:
    """Where a charger's upstream connects: the CPMS URL with the identity appended."""
    return f"{cpms_url.rstrip('/')}/{identity}"


async def dial(
    url: str,
    subprotocols: Sequence[str],
    authorization: str | None,
    *,
    open_timeout: float,
    max_size: int,
    now: Callable[[], float],
    context: str = "",
    proxy: str | None = None,
    ca_file: Path | None = None,
) -> CpmsConnection:
    """Open the upstream WebSocket. Raises UpstreamRefused or UpstreamUnavailable.

    A wss:// CPMS must present a certificate trusted by `ca_file` (None: the system store).
    """
    headers: list[tuple[str, str]] = []
    if subprotocols:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    if authorization is not None:
        headers.append(("Authorization", authorization))
    secure = url[:6].lower() == "wss://"
    sock = TextSocket(max_size, now)
    try:
        try:
            async with asyncio.timeout(open_timeout):
                transport, _ = await ws_connect(
                    lambda: sock,
                    url,
                    ssl_context=tls_context(ca_file) if secure else None,
                    websocket_handshake_timeout=open_timeout,
                    logger_name=WireLog(context),
                    enable_auto_ping=False,  # the registry's keep-alive sweep pings
                    max_frame_size=max_size,
                    extra_headers=headers,
                    proxy=proxy,
                    read_buffer_init_size=READ_BUFFER,
                    use_aiofastnet=False,
                )
        except BaseException:
            sock.abandon()
            raise
    except WSHandshakeError as exc:
        if exc.response is not None and int(exc.response.status) != 101:
            raise UpstreamRefused(int(exc.response.status)) from None
        raise UpstreamUnavailable(f"CPMS handshake failed: {exc}") from None
    except WSInvalidURL as exc:
        raise UpstreamUnavailable(f"invalid CPMS URL {url!r}: {exc}") from None
    except TimeoutError:
        raise UpstreamUnavailable(f"CPMS did not answer within {open_timeout:g} s") from None
    except ssl.SSLCertVerificationError as exc:
        raise UpstreamUnavailable(
            f"CPMS certificate not trusted: {exc.verify_message or exc.reason}"
            + (" (its CA can be given with --upstream-ca)" if ca_file is None else "")
        ) from None
    except ssl.SSLError as exc:
        raise UpstreamUnavailable(f"CPMS TLS handshake failed: {exc.reason or exc}") from None
    except WSError as exc:
        raise UpstreamUnavailable(f"CPMS handshake failed: {exc}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise UpstreamUnavailable(f"CPMS unreachable: {reason}") from None
    except ValueError as exc:  # e.g. a port out of range
        raise UpstreamUnavailable(f"invalid CPMS URL {url!r}: {exc}") from None
    if transport.response is None or transport.is_disconnected:
        # picows returns, without an answer, when the peer closes during the handshake
        raise UpstreamUnavailable("CPMS handshake failed: connection closed before an answer")
    chosen = transport.response.headers.get("Sec-WebSocket-Protocol")
    # kept by the transport for as long as it lives: thousands of them add up
    transport.response.headers.clear()
    transport.request.headers.clear()
    if chosen is not None and chosen not in subprotocols:
        sock.close(1002, "subprotocol not offered")
        raise UpstreamUnavailable(f"CPMS chose a subprotocol that was not offered: {chosen!r}")
    return CpmsConnection(sock, chosen)
