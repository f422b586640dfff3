"""What the site and charger services need from the relay, and whom they tell of a change.

The services change sites and chargers in the database and then carry out the effects on
live connections: a charger whose CPMS changed is reconnected, a deleted site's chargers are
closed, a site's offline mode is switched on its open links. They reach the relay only through
`LiveLinks` (the relay registry satisfies it) and tell everyone else who keeps a copy of sites
or chargers (the registry's handshake cache, a gateway, another node) through `ChangeWatcher`:
adding such a party is one more watcher, not one more call in every handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["ChangeWatcher", "LiveLinks", "RelayedCharger", "close_and_wait"]

log = logging.getLogger(__name__)


class RelayedCharger(Protocol):
    """A connected charger's link, as far as the services touch it."""

    #: strict offline mode: the charger is closed when its CPMS link is lost
    strict: bool

    @property
    def cpms_url(self) -> str | None:
        """The CPMS this link is relayed to (None: HARMON-E answers the charger)."""
        ...

    #: the site's rule for the secondary CPMS (text form): applies to its calls from now on
    secondary_rule: str

    @property
    def secondary_url(self) -> str | None:
        """The secondary CPMS this link mirrors to (None: none)."""
        ...

    @property
    def closed(self) -> asyncio.Event:
        """Set once the link is torn down."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the charger's connection (and so its CPMS link)."""
        ...


class LiveLinks(Protocol):
    """The relay's connected chargers, by site."""

    def links_for_site(self, site_uid: str) -> Sequence[RelayedCharger]: ...

    def link(self, site_uid: str, charger_id: str) -> RelayedCharger | None: ...

    def forget(self, site_uid: str, charger_id: str) -> None:
        """Forget a deleted charger that is no longer connected."""

    async def call(
        self,
        site_uid: str,
        charger_id: str,
        action: str,
        payload: Any,
        timeout: float | None = None,
    ) -> Any:
        """A call of HARMON-E's own to a charger, wherever it is connected (in a cluster, on
        another node), queued behind the call in flight; its answer's payload."""
        ...


class ChangeWatcher(Protocol):
    """Told after a site or charger was changed or deleted in the database."""

    def site_changed(self, uid: str) -> None: ...

    def charger_changed(self, site_uid: str, charger_id: str) -> None: ...


async def close_and_wait(
    links: Sequence[RelayedCharger], code: int, reason: str, grace: float
) -> None:
    """Close `links` and wait up to `grace` seconds for them to be torn down."""
    for link in links:
        await link.close(code, reason)
    if not links:
        return
    waits = [asyncio.create_task(link.closed.wait()) for link in links]
    _, pending = await asyncio.wait(waits, timeout=grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
