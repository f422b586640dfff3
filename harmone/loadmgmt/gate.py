"""What load management asks of a cluster (`harmone serve --cluster`): which sites' load
managers run here, and how their profiles reach chargers held by other nodes, fenced.

A single node has no gate: every configured site runs here and sends through the relay
registry. The cluster's node (`harmone.cluster.node.ClusterNode`) is the one gate.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["SiteGate"]


class SiteGate(Protocol):
    def owns(self, site_uid: str) -> bool:
        """Whether this node holds the site's lease (runs its load manager)."""
        ...

    async def send(
        self, site_uid: str, charger_id: str, action: str, payload: Any, timeout: float
    ) -> Any:
        """A call of the site's load manager to one of its chargers, wherever it is held,
        carrying the lease's fencing token (refused once another node took the lease)."""
        ...

    def connected_elsewhere(self, site_uid: str) -> list[tuple[str, str]]:
        """(charger id, OCPP version) of the site's chargers held by other nodes."""
        ...

    def config_changed(self, site_uid: str) -> None:
        """The site's configuration was stored here: the node running it reloads it."""
        ...
