"""SetChargingProfile payloads HARMON-E sends, built by pure functions per OCPP version.

Both purposes use one schedule period starting at 0, kind Relative, rate unit A (W on request),
as the product does. Each (purpose, connector) has a fixed profile id, so that a new limit
replaces the previous profile instead of stacking up; the ids sit in a range a CPMS is unlikely
to use (see docs/load-management.md).
"""

from __future__ import annotations

from typing import Any, Literal

from harmone.loadmgmt.model import amps_to_watts
from harmone.ocpp.versions import OcppVersion

__all__ = ["PROFILE_ID_BASE", "Purpose", "profile_id", "set_charging_profile"]

Purpose = Literal["TxDefaultProfile", "TxProfile"]
PROFILE_ID_BASE = 7_700_000


def profile_id(purpose: Purpose, connector_id: int) -> int:
    return PROFILE_ID_BASE + connector_id * 10 + (1 if purpose == "TxDefaultProfile" else 2)


def _limit(amps: float, unit: str, phases: int, voltage: float) -> float:
    if unit == "W":
        return round(amps_to_watts(amps, phases, voltage), 1)
    return round(amps, 1)


def set_charging_profile(
    version: OcppVersion,
    purpose: Purpose,
    connector_id: int,
    amps: float,
    *,
    transaction_id: int | str | None = None,
    stack_level: int = 0,
    unit: Literal["A", "W"] = "A",
    phases: int = 3,
    voltage: float = 230.0,
) -> dict[str, Any]:
    """The SetChargingProfile request payload for `version`."""
    if purpose == "TxProfile" and transaction_id is None:
        raise ValueError("a TxProfile needs the transaction id")
    period: dict[str, Any] = {"startPeriod": 0, "limit": _limit(amps, unit, phases, voltage)}
    pid = profile_id(purpose, connector_id)
    if version is OcppVersion.V16:
        profile: dict[str, Any] = {
            "chargingProfileId": pid,
            "stackLevel": stack_level,
            "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Relative",
            "chargingSchedule": {"chargingRateUnit": unit, "chargingSchedulePeriod": [period]},
        }
        if purpose == "TxProfile":
            profile["transactionId"] = int(transaction_id)  # type: ignore[arg-type]
        return {"connectorId": connector_id, "csChargingProfiles": profile}
    profile = {
        "id": pid,
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Relative",
        "chargingSchedule": [
            {"id": pid, "chargingRateUnit": unit, "chargingSchedulePeriod": [period]}
        ],
    }
    if purpose == "TxProfile":
        profile["transactionId"] = str(transaction_id)
    return {"evseId": connector_id, "chargingProfile": profile}
