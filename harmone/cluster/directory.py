"""Who is alive in the cluster and which chargers each node holds, kept from NATS messages.

Pure bookkeeping (no I/O): the node feeds it heartbeats and "taken"/"left" messages with the
monotonic time they arrived, and asks it where a charger is. A node silent for
`3 × heartbeat` is gone, and so are its chargers' places.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ChargerPlace", "NodeDirectory", "NodeInfo"]

ChargerKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ChargerPlace:
    node: str
    ocpp_version: str | None


@dataclass(slots=True)
class NodeInfo:
    id: str
    seen: float
    url: str = ""
    chargers: int = 0
    sites_led: tuple[str, ...] = ()


@dataclass(slots=True)
class NodeDirectory:
    """See the module docstring."""

    me: str
    heartbeat: float
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    places: dict[ChargerKey, ChargerPlace] = field(default_factory=dict)

    def beat(
        self,
        node: str,
        now: float,
        chargers: list[tuple[str, str, str | None]],
        url: str = "",
        sites_led: tuple[str, ...] = (),
    ) -> None:
        """A node's heartbeat: it holds exactly `chargers` (site, id, version)."""
        self.nodes[node] = NodeInfo(node, now, url, len(chargers), sites_led)
        held = {(s, c) for s, c, _ in chargers}
        for key, place in list(self.places.items()):
            if place.node == node and key not in held:
                del self.places[key]
        for site, charger, version in chargers:
            known = self.places.get((site, charger))
            if known is None or known.node == node or not self.alive(known.node, now):
                self.places[(site, charger)] = ChargerPlace(node, version)

    def touch(
        self, node: str, now: float, count: int, url: str = "", sites_led: tuple[str, ...] = ()
    ) -> None:
        """A heartbeat without the charger list: alive, holding `count` chargers."""
        self.nodes[node] = NodeInfo(node, now, url, count, sites_led)

    def taken(self, node: str, site: str, charger: str, version: str | None) -> None:
        self.places[(site, charger)] = ChargerPlace(node, version)

    def left(self, node: str, site: str, charger: str) -> None:
        place = self.places.get((site, charger))
        if place is not None and place.node == node:
            del self.places[(site, charger)]

    def gone(self, node: str) -> None:
        self.nodes.pop(node, None)
        for key, place in list(self.places.items()):
            if place.node == node:
                del self.places[key]

    def alive(self, node: str, now: float) -> bool:
        info = self.nodes.get(node)
        return info is not None and now - info.seen <= 3 * self.heartbeat

    def holder(self, site: str, charger: str) -> ChargerPlace | None:
        return self.places.get((site, charger))

    def of_site(self, site: str) -> dict[str, ChargerPlace]:
        return {c: p for (s, c), p in self.places.items() if s == site}

    def alive_nodes(self, now: float) -> list[NodeInfo]:
        return sorted((i for i in self.nodes.values() if self.alive(i.id, now)), key=lambda i: i.id)
