"""SetChargingProfile payloads HARMON-E sends, built by pure functions per OCPP version.

Both purposes use one schedule period starting at 0, kind Relative, rate unit A (W on request),
as the product does. A limit in W is the granted current times the voltage across the charger's
supply times the lines in use: U_LN x I for L-N, U_LL x I for L-L (one current between two
lines), U_LN x I x n for a three-phase charger with n lines in use (pass the grant's phases, so
that a one-phase car on a three-phase charger is not allowed three times its current).
Each (purpose, connector) has a fixed profile id, so that a new limit
replaces the previous profile instead of stacking up; the ids sit in a range a CPMS is unlikely
to use (see docs/load-management.md).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from harmone.loadmgmt.model import Wiring, amps_to_watts
from harmone.ocpp.versions import OcppVersion

__all__ = ["PROFILE_ID_BASE", "Purpose", "profile_id", "set_charging_profile"]

Purpose = Literal["TxDefaultProfile", "TxProfile"]
PROFILE_ID_BASE = 7_700_000


def profile_id(purpose: Purpose, connector_id: int) -> int:
    return PROFILE_ID_BASE + connector_id * 10 + (1 if purpose == "TxDefaultProfile" else 2)


def _limit(amps: float, unit: str, phases: int, voltage: float, wiring: Wiring | None) -> float:
    if unit == "W":
        # Rounded down: a limit is never rounded above what was granted.
        watts = amps_to_watts(amps, phases, voltage, wiring=wiring)
        return math.floor(watts * 10 + 1e-6) / 10
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
    wiring: Wiring | None = None,
) -> dict[str, Any]:
    """The SetChargingProfile request payload for `version`.

    `phases` is the number of lines in use (1 for L-N and L-L); `voltage` as in the module doc.
    """
    if purpose == "TxProfile" and transaction_id is None:
        raise ValueError("a TxProfile needs the transaction id")
    limit = _limit(amps, unit, phases, voltage, wiring)
    period: dict[str, Any] = {"startPeriod": 0, "limit": limit}
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
