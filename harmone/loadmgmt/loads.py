"""What load management keeps per charger and per running transaction (`SiteLoadState`'s
parts; `state.py` has the rules that change them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from harmone.loadmgmt.stacking import ChargerProfiles, Transaction
from harmone.loadmgmt.traffic import CpmsCap
from harmone.ocpp.versions import OcppVersion

__all__ = ["ChargerLoad", "ConnectorLoad"]


@dataclass(slots=True)
class ConnectorLoad:
    """A running transaction on one connector."""

    transaction_id: str
    charging_since: datetime
    measured: tuple[float, ...] | None = None
    measured_at: datetime | None = None
    energy_start_wh: float | None = None
    energy_wh: float | None = None
    #: What the car announced it takes at most (ISO 15118).
    car_max: float | None = None
    #: What the car is seen to take: its settled draw plus a margin (give-back).
    car_estimate: float | None = None
    below_since: datetime | None = None
    #: The TxProfile limit the charger accepted last (None: none yet: its TxDefault holds).
    limit: float | None = None
    limit_since: datetime | None = None
    #: A limit on its way (sent, not answered yet).
    sending: float | None = None
    #: After an accepted decrease: the higher limit that still counts until `previous_until`.
    previous: float | None = None
    previous_until: datetime | None = None
    #: The lower limit of an accepted decrease, kept while the car was drawing more than it
    #: when it was accepted: a reading at or under it then proves the charger applied the
    #: decrease. (Not the limit in force now: an increase accepted since, before the decrease
    #: was seen applied, proves nothing about the higher limit still counted.)
    proof_below: float | None = None
    over_since: datetime | None = None
    #: Send the limit again even if unchanged (the charger reconnected, the CPMS cleared).
    refresh: bool = False
    last_increase: datetime | None = None
    last_change: datetime | None = None
    #: Taking turns (`sessions.py`): granted more than 0 A without a break since then, or held
    #: at 0 A by HARMON-E since then (the charger accepted it); neither: not started yet.
    running_since: datetime | None = None
    paused_since: datetime | None = None
    #: Wh integrated from measured current x voltage, for chargers without an energy register.
    energy_integrated_wh: float = 0.0
    #: What the car said in NotifyEVChargingNeeds (2.x): when it leaves, and the energy it asked
    #: for (Wh) when this session had delivered `needs_delivered_wh`.
    departure: datetime | None = None
    needs_energy_wh: float | None = None
    needs_delivered_wh: float = 0.0


@dataclass(slots=True)
class ChargerLoad:
    version: OcppVersion
    connected: bool = True
    booted: bool = False
    connectors: set[int] = field(default_factory=set)
    txs: dict[int, ConnectorLoad] = field(default_factory=dict)
    #: The CPMS's last profile per connector (0: the whole charger), as shown to people; the
    #: limits themselves are read from `profiles`.
    caps: dict[int, CpmsCap] = field(default_factory=dict)
    #: Every profile the charger accepted (the CPMS's and HARMON-E's), as it keeps them.
    profiles: ChargerProfiles = field(init=False)
    #: Whether `profiles` is all the charger holds: HARMON-E watched it accept its own profiles
    #: and everything since. False after a restart or a change of protocol, until then.
    watched: bool = False
    stack_level: int = 0
    #: TxDefaultProfile limit accepted per connector; missing: unknown.
    defaults: dict[int, float] = field(default_factory=dict)
    #: Connectors whose TxDefaultProfile was accepted since the charger (re)connected.
    defaults_fresh: set[int] = field(default_factory=set)
    flagged: str | None = None
    flagged_at: datetime | None = None
    #: The call in flight was sent then (None: nothing in flight).
    call_since: datetime | None = None
    last_failure: datetime | None = None

    def __post_init__(self) -> None:
        self.profiles = ChargerProfiles(self.version)

    def transaction(self, conn: int) -> Transaction | None:
        tx = self.txs.get(conn)
        return None if tx is None else Transaction(tx.transaction_id, tx.charging_since)
