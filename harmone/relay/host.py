"""What a charger link reports to, and what the registry asks of a link.

Two small protocols instead of an import cycle: `ChargerLink` knows only a `LinkHost` (the
registry implements it), and the registry knows links only as `Link`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sized
from typing import Any, Protocol

from harmone.ocpp.session import Observe
from harmone.relay.state import LiveCharger

__all__ = ["Link", "LinkHost"]


class Link(Protocol):
    """A relayed charger as the registry and the other layers see it."""

    #: strict offline mode: the charger is closed when its CPMS link is lost
    strict: bool
    #: what the secondary CPMS may ask (text form, `harmone.ocpp.secondary`)
    secondary_rule: str

    @property
    def closed(self) -> asyncio.Event:
        """Set once the link is torn down."""
        ...

    @property
    def live(self) -> LiveCharger: ...

    @property
    def cpms_url(self) -> str | None: ...

    @property
    def secondary_url(self) -> str | None: ...

    async def call(self, action: str, payload: Any, timeout: float | None = None) -> Any: ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the charger's connection; the link is torn down when it is gone."""
        ...

    def close_now(self, code: int = 1000, reason: str = "") -> None: ...

    def keepalive(self, now: float, interval: float, timeout: float) -> None: ...

    def watch(self, actions: frozenset[str]) -> None:
        """Interpret frames of these actions from now on."""
        ...


class LinkHost(Protocol):
    """Told synchronously by a link, in the relay's task: must not block."""

    @property
    def frame_watchers(self) -> Sized:
        """Not empty while someone watches frames go by: only then is `seen` told."""
        ...

    def detached(self, link: Link) -> None: ...

    def changed(self, live: LiveCharger) -> None: ...

    def seen(self, live: LiveCharger) -> None: ...

    def observe(self, live: LiveCharger, obs: Observe) -> None: ...
