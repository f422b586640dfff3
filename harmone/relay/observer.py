"""Learning from watched traffic: boot data and connector statuses, OCPP 1.6 and 2.x."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from harmone.errors import FrameError
from harmone.ocpp.framing import MessageType, decode, parse_envelope, payload_of
from harmone.ocpp.session import Observe
from harmone.relay.state import LiveCharger

__all__ = ["WATCHED_ACTIONS", "apply_observation"]

log = logging.getLogger(__name__)

#: Actions whose frames are reported to observers (the registry, load management); their
#: payloads are decoded only by those that use them. Everything else passes by undecoded.
WATCHED_ACTIONS = frozenset(
    {
        "BootNotification",
        "StatusNotification",
        "StartTransaction",
        "StopTransaction",
        "MeterValues",
        "TransactionEvent",
        "NotifyEVChargingNeeds",
        "SetChargingProfile",
        "ClearChargingProfile",
    }
)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def apply_observation(live: LiveCharger, obs: Observe, now: datetime) -> bool:
    """Update `live` from a watched frame; True if something worth persisting changed."""
    if (
        obs.sender == "cpms"
        or obs.type is not MessageType.CALL
        or obs.action not in ("BootNotification", "StatusNotification")
    ):
        return False
    try:
        payload = payload_of(decode(obs.text), parse_envelope(obs.text))
    except FrameError:
        return False
    if not isinstance(payload, dict):
        return False
    if obs.action == "BootNotification":
        return _boot(live, payload)
    if obs.action == "StatusNotification":
        return _status(live, payload, now)
    return False


def _boot(live: LiveCharger, p: dict[str, Any]) -> bool:
    station = p.get("chargingStation")
    if isinstance(station, dict):  # 2.0.1 / 2.1
        vendor, model = station.get("vendorName"), station.get("model")
        serial, firmware = station.get("serialNumber"), station.get("firmwareVersion")
    else:  # 1.6
        vendor, model = p.get("chargePointVendor"), p.get("chargePointModel")
        serial = p.get("chargePointSerialNumber") or p.get("chargeBoxSerialNumber")
        firmware = p.get("firmwareVersion")
    live.vendor, live.model = _str(vendor), _str(model)
    live.serial_number, live.firmware_version = _str(serial), _str(firmware)
    return True


def _status(live: LiveCharger, p: dict[str, Any], now: datetime) -> bool:
    if "connectorStatus" in p:  # 2.x: one status per EVSE connector; shown per EVSE
        cid, status = p.get("evseId"), p.get("connectorStatus")
    else:
        cid, status = p.get("connectorId"), p.get("status")
    if not isinstance(cid, int) or isinstance(cid, bool) or not isinstance(status, str):
        return False
    live.connectors[cid] = (status, now)
    return True
