"""How links reach their CPMS: a small interface, and the default that bounds handshakes.

After a restart or a network blip thousands of chargers reconnect at once; the CPMS must not
be hit by thousands of TLS and WebSocket handshakes together, so the default dialer lets at
most `RelayConfig.max_concurrent_dials` run at once (the rest wait their turn). Tests and
embedders can pass another `Dialer` to the registry.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from harmone.clock import Clock
from harmone.config import RelayConfig
from harmone.relay.upstream import CpmsConnection, dial

__all__ = ["BoundedDialer", "DialRequest", "Dialer"]


@dataclass(frozen=True, slots=True)
class DialRequest:
    """One CPMS connection to open for a charger."""

    url: str
    #: offered in this order; the CPMS picks one
    subprotocols: tuple[str, ...]
    #: the charger's Authorization header, forwarded unchanged
    authorization: str | None
    #: "site=… charger=…", for log lines
    context: str


class Dialer(Protocol):
    async def dial(self, request: DialRequest) -> CpmsConnection:
        """Open the connection; raises UpstreamRefused or UpstreamUnavailable."""
        ...


class BoundedDialer:
    """`upstream.dial` with at most `max_concurrent_dials` handshakes in progress."""

    def __init__(self, config: RelayConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._slots = asyncio.Semaphore(config.max_concurrent_dials)
        self.in_progress = 0
        self.peak = 0

    async def dial(self, request: DialRequest) -> CpmsConnection:
        cfg = self._config
        async with self._slots:
            self.in_progress += 1
            self.peak = max(self.peak, self.in_progress)
            try:
                return await dial(
                    request.url,
                    request.subprotocols,
                    request.authorization,
                    open_timeout=max(10.0, cfg.upstream_connect_timeout),
                    max_size=cfg.max_frame_bytes,
                    now=self._clock.monotonic,
                    context=request.context,
                    proxy=cfg.upstream_proxy,
                    ca_file=cfg.upstream_ca,
                )
            finally:
                self.in_progress -= 1
