"""What a `ChargerLink` is built from: value objects, not the registry.

`LinkServices` is shared by every link of the process; `LinkSetup` is what the handshake decided
for one charger.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harmone.clock import Clock
from harmone.config import RelayConfig
from harmone.metrics import RelayMetrics
from harmone.relay.dialer import Dialer
from harmone.relay.host import LinkHost

__all__ = ["LinkServices", "LinkSetup"]


@dataclass(frozen=True, slots=True)
class LinkServices:
    """What every link of the process shares."""

    host: LinkHost
    dialer: Dialer
    config: RelayConfig
    clock: Clock
    metrics: RelayMetrics = field(default_factory=RelayMetrics)


@dataclass(frozen=True, slots=True)
class LinkSetup:
    """What the handshake decided for this charger."""

    subprotocol: str
    #: None: HARMON-E answers the charger itself
    cpms_url: str | None
    #: the charger's Authorization header, forwarded to the CPMS unchanged
    authorization: str | None = None
    #: strict offline mode: the charger is closed when its CPMS link is lost
    strict: bool = False
    #: a second backend that gets a copy of the charger's calls (relay/secondary.py)
    secondary_url: str | None = None
    secondary_rule: str = "read-only"
