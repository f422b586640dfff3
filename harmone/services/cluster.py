"""What the web layer may read of the cluster this node belongs to (`harmone serve --cluster`):
a status made of plain values. A single node has none."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["ClusterView"]


class ClusterView(Protocol):
    def status(self) -> dict[str, Any]:
        """{node, nats_url, nodes: [{id, url, chargers, sites_led}], leases: {site: node},
        sites_led: [site]}"""
        ...
