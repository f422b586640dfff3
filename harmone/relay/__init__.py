"""asyncio relay: pairs each charger connection with its CPMS connection."""

from __future__ import annotations

from harmone.relay.endpoint import OcppEndpoint
from harmone.relay.link import ChargerLink
from harmone.relay.registry import RelayRegistry

__all__ = ["ChargerLink", "OcppEndpoint", "RelayRegistry"]
