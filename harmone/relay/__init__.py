"""asyncio relay: pairs each charger connection with its CPMS connection."""

from __future__ import annotations

from harmone.relay.endpoint import OcppEndpoint
from harmone.relay.hub import RelayHub
from harmone.relay.link import ChargerLink

__all__ = ["ChargerLink", "OcppEndpoint", "RelayHub"]
