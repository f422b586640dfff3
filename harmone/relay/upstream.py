"""Dialling a charger's CPMS, with failures sorted into what the charger should be told."""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from harmone.errors import UpstreamUnavailable

__all__ = ["UpstreamRefused", "cpms_endpoint", "dial", "tls_context"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UpstreamRefused(Exception):
    """The CPMS answered the handshake with an HTTP status other than 101."""

    status: int

    def __str__(self) -> str:
        return f"CPMS refused the connection: HTTP {self.status}"


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
    proxy: str | None = None,
    ca_file: Path | None = None,
) -> ClientConnection:
    """Open the upstream WebSocket. Raises UpstreamRefused or UpstreamUnavailable.

    A wss:// CPMS must present a certificate trusted by `ca_file` (None: the system store).
    """
    headers = [("Authorization", authorization)] if authorization is not None else None
    secure = url[:6].lower() == "wss://"
    try:
        return await connect(
            url,
            subprotocols=[Subprotocol(p) for p in subprotocols],
            additional_headers=headers,
            open_timeout=open_timeout,
            max_size=max_size,
            proxy=proxy,
            # websockets refuses an ssl argument for ws:// URLs.
            ssl=tls_context(ca_file) if secure else None,
            user_agent_header=None,
            # The charger's own ping/pong keeps its side alive; this keeps ours honest.
            ping_interval=30,
            ping_timeout=30,
            close_timeout=2,
        )
    except InvalidStatus as exc:
        raise UpstreamRefused(exc.response.status_code) from None
    except InvalidURI as exc:
        raise UpstreamUnavailable(f"invalid CPMS URL {url!r}: {exc}") from None
    except TimeoutError:
        raise UpstreamUnavailable(f"CPMS did not answer within {open_timeout:g} s") from None
    except InvalidHandshake as exc:
        raise UpstreamUnavailable(f"CPMS handshake failed: {exc}") from None
    except ssl.SSLCertVerificationError as exc:
        raise UpstreamUnavailable(
            f"CPMS certificate not trusted: {exc.verify_message or exc.reason}"
            + (" (its CA can be given with --upstream-ca)" if ca_file is None else "")
        ) from None
    except ssl.SSLError as exc:
        raise UpstreamUnavailable(f"CPMS TLS handshake failed: {exc.reason or exc}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise UpstreamUnavailable(f"CPMS unreachable: {reason}") from None
    except asyncio.CancelledError:
        raise
