"""A running transaction's history and intent, as the allocator needs them to take turns and
to meet departures (`Demand`'s `energy_delivered`, `running_since` / `paused_since`,
`limit_in_force`, `departure`, `energy_needed`; docs/load-management.md, "What the controller
fills in").

Pure functions over a `ConnectorLoad`, called by `SiteLoadState` as events arrive:

* energy delivered this session: the meter register (Energy.Active.Import.Register) minus its
  value at the start (1.6 StartTransaction's meterStart, else the first register seen); for a
  charger that reports no register, measured current x voltage integrated over the time between
  readings (the injected clock's time);
* running / paused: from the TxProfile limits HARMON-E sent and the charger accepted. A car is
  running from its first accepted grant above 0 A, paused from the accepted 0 A that ended its
  run; a car never granted anything is neither (it waits since it arrived);
* departure and energy need: from 2.x NotifyEVChargingNeeds, else from the charger's operator
  defaults (`default_dwell_minutes` after arrival, `default_energy_kwh` for the session).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from harmone.loadmgmt.config import ChargerSettings
from harmone.loadmgmt.loads import ConnectorLoad
from harmone.loadmgmt.model import Demand
from harmone.ocpp.events import ChargingNeeds

__all__ = ["delivered_wh", "demand_of", "granted", "integrate", "needs_told"]

#: A gap between two readings longer than this is not integrated: the car may have stopped.
_MAX_GAP = timedelta(minutes=15)


def delivered_wh(tx: ConnectorLoad) -> float:
    """Wh delivered this session: from the register if the charger reports one."""
    if tx.energy_wh is not None and tx.energy_start_wh is not None:
        return max(0.0, tx.energy_wh - tx.energy_start_wh)
    return tx.energy_integrated_wh


def integrate(
    tx: ConnectorLoad, amps: tuple[float, ...], settings: ChargerSettings, now: datetime
) -> None:
    """Add the energy of the time since the previous reading (before `tx.measured` becomes
    `amps`): the mean of the two readings' power over that time."""
    before, at = tx.measured, tx.measured_at
    if before is None or at is None or now <= at or now - at > _MAX_GAP:
        return
    hours = (now - at).total_seconds() / 3600
    # Each reported current flows at the supply's voltage (to neutral, or line to line for an
    # L-L charger, which reports one current).
    mean = (sum(before) + sum(amps)) / 2 if len(before) == len(amps) else sum(before)
    tx.energy_integrated_wh += mean * settings.voltage * hours


def granted(tx: ConnectorLoad, limit: float, now: datetime) -> None:
    """The charger accepted a TxProfile of `limit` A for this transaction."""
    if limit > 0:
        if tx.running_since is None:
            tx.running_since, tx.paused_since = now, None
    elif tx.running_since is not None:
        # Only a run that ends is a pause: a car never started keeps waiting since it arrived.
        tx.running_since, tx.paused_since = None, now


def needs_told(tx: ConnectorLoad, event: ChargingNeeds) -> bool:
    """The car told its departure and energy need; True if either is new."""
    changed = False
    if event.departure is not None and event.departure != tx.departure:
        tx.departure, changed = event.departure, True
    if event.energy_wh is not None:
        tx.needs_energy_wh, tx.needs_delivered_wh = event.energy_wh, delivered_wh(tx)
        changed = True
    return changed


def demand_of(
    charger_id: str,
    conn: int,
    tx: ConnectorLoad,
    settings: ChargerSettings,
    measured: tuple[float, ...] | None,
    car_max: float | None,
) -> Demand:
    """The allocator's view of one running transaction."""
    delivered = delivered_wh(tx)
    departure, needed = tx.departure, None
    if tx.needs_energy_wh is not None:
        needed = max(0.0, tx.needs_energy_wh - (delivered - tx.needs_delivered_wh))
    if departure is None and settings.default_dwell_minutes is not None:
        departure = tx.charging_since + timedelta(minutes=settings.default_dwell_minutes)
    if needed is None and settings.default_energy_kwh is not None:
        needed = max(0.0, settings.default_energy_kwh * 1000 - delivered)
    # A limit is in force once accepted and, for a decrease, applied; since it last moved.
    limit = tx.limit if tx.previous is None else None
    since = (tx.last_change or tx.limit_since) if limit is not None else None
    if since is None:
        limit = None
    return Demand(
        charger_id,
        conn,
        tx.charging_since,
        measured=measured,
        measured_at=tx.measured_at if measured is not None else None,
        limit_in_force=limit,
        limit_since=since,
        car_max=car_max,
        departure=departure,
        energy_needed=needed,
        energy_delivered=delivered,
        running_since=tx.running_since,
        paused_since=tx.paused_since,
    )
