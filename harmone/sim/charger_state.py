"""What a simulated charger knows: its connectors, the charging profiles it holds, its settings.

Plain values shared by the simulator's modules (`harmone.sim.charger` assembles them).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, cast

__all__ = [
    "MODEL",
    "STATION_MAX",
    "STATUS_16",
    "STATUS_201",
    "STOP_TRIGGER_201",
    "VALID_16",
    "VALID_201",
    "VENDOR",
    "VERSION_OF_SUBPROTOCOL",
    "VOLTAGE",
    "ConnectorState",
    "Factory",
    "InstalledProfile",
    "OcppVersion",
    "initial_settings",
]

OcppVersion = Literal["1.6", "2.0.1"]
VENDOR = "HARMON-E"
MODEL = "SimCharger"
VOLTAGE = 230.0

VERSION_OF_SUBPROTOCOL: dict[str | None, OcppVersion] = {
    "ocpp1.6": "1.6",
    "ocpp2.0.1": "2.0.1",
    # 2.1 is a superset of 2.0.1 for every message the simulator sends or answers.
    "ocpp2.1": "2.0.1",
}
# One vocabulary for callers; each version gets its own word for the same connector state.
STATUS_16 = {"Occupied": "Preparing"}
STATUS_201 = dict.fromkeys(
    ("Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing"), "Occupied"
)
VALID_16 = {
    "Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV", "Finishing",
    "Reserved", "Unavailable", "Faulted",
}  # fmt: skip
VALID_201 = {"Available", "Occupied", "Reserved", "Unavailable", "Faulted"}
STATION_MAX = ("ChargePointMaxProfile", "ChargingStationMaxProfile")
STOP_TRIGGER_201 = {"Remote": "RemoteStop", "EVDisconnected": "EVCommunicationLost"}

#: A call the charger makes later (after its answer to the central system has been sent).
Factory = Callable[[], Coroutine[Any, Any, Any]]


@dataclass
class ConnectorState:
    """What the simulator knows about one connector (1.6) or EVSE (2.0.1)."""

    connector_id: int
    status: str = "Available"
    transaction_id: int | str | None = None
    id_tag: str | None = None
    #: A StartTransaction / TransactionEvent(Started) is on the wire: profiles for it are welcome.
    starting: bool = False
    #: The energy register of the connector's meter; it only grows.
    energy_wh: float = 0.0
    current_a: float = 0.0
    seq_no: int = 0
    operative: bool = True


@dataclass
class InstalledProfile:
    """A charging profile the central system set, as received (camelCase, on the wire)."""

    connector_id: int
    profile: dict[str, Any]
    received_at: float

    @property
    def profile_id(self) -> int:
        return int(self.profile.get("chargingProfileId", self.profile.get("id", -1)))

    @property
    def purpose(self) -> str:
        return str(self.profile.get("chargingProfilePurpose", ""))

    @property
    def stack_level(self) -> int:
        return int(self.profile.get("stackLevel", 0))

    def schedule(self) -> dict[str, Any]:
        sched = self.profile.get("chargingSchedule", {})
        # 2.0.1 allows several schedules (one per rate unit or ISO 15118 tariff); the first
        # one is what a charger without ISO 15118 applies.
        if isinstance(sched, list):
            return cast(dict[str, Any], sched[0]) if sched else {}
        return cast(dict[str, Any], sched)

    def limit_amps(self, now: float, default_phases: int) -> float | None:
        """The per-phase current limit in force `now` seconds (loop time)."""
        sched = self.schedule()
        periods = sorted(sched.get("chargingSchedulePeriod", []), key=lambda p: p["startPeriod"])
        if not periods:
            return None
        # Elapsed time is counted from reception: exact for the Relative, single-period
        # profiles HARMON-E sends, an approximation for Absolute or Recurring ones.
        elapsed = now - self.received_at
        current = periods[0]
        for period in periods:
            if period["startPeriod"] <= elapsed:
                current = period
        limit = float(current["limit"])
        if sched.get("chargingRateUnit") == "W":
            phases = int(current.get("numberPhases") or default_phases)
            limit /= VOLTAGE * phases
        return limit


def initial_settings(
    heartbeat_interval: float, meter_interval: float, connectors: int
) -> tuple[dict[str, tuple[str, bool]], dict[tuple[str, str], tuple[str, bool]]]:
    """A new charger's 1.6 configuration keys and 2.0.1 variables: {key: (value, read-only)}."""
    n = str(connectors)
    configuration = {
        "HeartbeatInterval": (str(int(heartbeat_interval)), False),
        "MeterValueSampleInterval": (str(int(meter_interval)), False),
        "MeterValuesSampledData": ("Energy.Active.Import.Register,Current.Import", False),
        "NumberOfConnectors": (n, True),
        "ChargeProfileMaxStackLevel": ("8", True),
        "ChargingScheduleAllowedChargingRateUnit": ("Current,Power", True),
        "ChargingScheduleMaxPeriods": ("10", True),
        "MaxChargingProfilesInstalled": ("10", True),
        "SupportedFeatureProfiles": ("Core,SmartCharging,RemoteTrigger", True),
        "AuthorizeRemoteTxRequests": ("false", False),
        "ConnectionTimeOut": ("60", False),
    }
    variables = {
        ("OCPPCommCtrlr", "HeartbeatInterval"): (str(int(heartbeat_interval)), False),
        ("SampledDataCtrlr", "TxUpdatedInterval"): (str(int(meter_interval)), False),
        ("SmartChargingCtrlr", "Enabled"): ("true", False),
        ("SmartChargingCtrlr", "RateUnit"): ("A,W", True),
        ("SmartChargingCtrlr", "ProfileStackLevel"): ("8", True),
        ("SmartChargingCtrlr", "PeriodsPerSchedule"): ("10", True),
        ("AuthCtrlr", "AuthorizeRemoteStart"): ("false", False),
        ("ChargingStation", "Model"): (MODEL, True),
        ("ChargingStation", "VendorName"): (VENDOR, True),
        ("EVSE", "Count"): (n, True),
    }
    return configuration, variables
