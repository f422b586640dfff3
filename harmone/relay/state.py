"""In-memory live state of connected chargers: what the API shows and the writer persists."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from harmone.store.records import ChargerIdentity, ChargerState

__all__ = ["ChargerKey", "FrameRecord", "LiveCharger", "Party"]

ChargerKey = tuple[str, str]  # (site UID, charge point identity as received)
Party = Literal["charger", "cpms", "harmone"]


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """One frame as the message inspector shows it."""

    at: float  # epoch seconds
    sender: Party
    receiver: Party
    text: str


@dataclass(slots=True)
class LiveCharger:
    site_uid: str
    id: str
    ocpp_version: str | None = None
    connected: bool = False
    upstream_connected: bool = False
    #: Why the CPMS link is not up, in words a support person understands (None when up).
    upstream_error: str | None = None
    remote_addr: str | None = None
    connected_since: datetime | None = None
    last_seen: datetime | None = None
    identity: ChargerIdentity = field(default_factory=ChargerIdentity)
    connectors: dict[int, tuple[str, datetime]] = field(default_factory=dict)
    frames: deque[FrameRecord] = field(default_factory=lambda: deque(maxlen=200))

    @property
    def key(self) -> ChargerKey:
        return (self.site_uid, self.id)

    def snapshot(self) -> ChargerState:
        """What to persist: the whole live state (the store leaves None fields unchanged)."""
        return ChargerState(
            site_uid=self.site_uid,
            charger_id=self.id,
            ocpp_version=self.ocpp_version,
            connected=self.connected,
            upstream_connected=self.upstream_connected,
            last_seen=self.last_seen,
            identity=self.identity,
            connectors=dict(self.connectors),
        )
