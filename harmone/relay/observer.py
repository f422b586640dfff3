"""What the registry learns from watched traffic: boot data and connector statuses."""

from __future__ import annotations

from datetime import datetime

from harmone.domain import ChargerIdentity
from harmone.ocpp.events import Booted, ConnectorStatusChanged, Event
from harmone.relay.state import LiveCharger

__all__ = ["apply_events"]


def apply_events(live: LiveCharger, events: tuple[Event, ...], now: datetime) -> bool:
    """Update `live` from the events of one frame; True if something worth persisting changed."""
    changed = False
    for event in events:
        if isinstance(event, Booted):
            live.identity = ChargerIdentity.model_validate(event, from_attributes=True)
            changed = True
        elif isinstance(event, ConnectorStatusChanged):
            live.connectors[event.connector_id] = (event.status, now)
            changed = True
    return changed
