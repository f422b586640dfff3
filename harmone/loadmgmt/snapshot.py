"""What of a site's load state survives a restart, as JSON (`harmone.store.loadstate`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from harmone.loadmgmt.stacking import ChargerProfiles, InstalledProfile
from harmone.loadmgmt.state import ChargerLoad, ConnectorLoad, SiteLoadState
from harmone.loadmgmt.traffic import CpmsCap
from harmone.ocpp.events import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    SchedulePeriod,
)
from harmone.ocpp.versions import OcppVersion

__all__ = ["restore", "snapshot"]


def snapshot(state: SiteLoadState) -> dict[str, Any]:
    """What must survive a restart, as JSON: limits are the most each charger may apply."""
    chargers = {}
    for cid, s in sorted(state.chargers.items()):
        txs = {}
        for conn, tx in sorted(s.txs.items()):
            limits = [v for v in (tx.limit, tx.sending, tx.previous) if v is not None]
            txs[str(conn)] = {
                "transaction_id": tx.transaction_id,
                "charging_since": tx.charging_since.isoformat(),
                "limit": max(limits) if limits else None,
                "limit_since": _iso(tx.limit_since),
                "car_max": tx.car_max,
                "car_estimate": tx.car_estimate,
                "energy_start_wh": tx.energy_start_wh,
                "energy_wh": tx.energy_wh,
                # Turns and intent (sessions.py): a restart must not reset whose turn it is.
                "last_change": _iso(tx.last_change),
                "running_since": _iso(tx.running_since),
                "paused_since": _iso(tx.paused_since),
                "energy_integrated_wh": tx.energy_integrated_wh,
                "departure": _iso(tx.departure),
                "needs_energy_wh": tx.needs_energy_wh,
                "needs_delivered_wh": tx.needs_delivered_wh,
            }
        chargers[cid] = {
            "version": s.version.value,
            "connectors": sorted(s.connectors),
            "stack_level": s.stack_level,
            "defaults": {str(k): v for k, v in sorted(s.defaults.items())},
            "flagged": s.flagged,
            "flagged_at": _iso(s.flagged_at),
            "caps": {str(k): [c.purpose, c.stack_level, c.amps] for k, c in sorted(s.caps.items())},
            "profiles": [_installed(p) for p in s.profiles.profiles],
            "transactions": txs,
        }
    return {
        "chargers": chargers,
        "dynamic_limits": dict(sorted(state.dynamic_limits.items())),
    }


def restore(data: dict[str, Any]) -> SiteLoadState:
    """The state of a `snapshot`; every charger starts disconnected."""
    state = SiteLoadState()
    state.dynamic_limits = {str(k): float(v) for k, v in data.get("dynamic_limits", {}).items()}
    for cid, c in data.get("chargers", {}).items():
        ch = ChargerLoad(OcppVersion(c["version"]), connected=False)
        ch.connectors = set(c.get("connectors", ()))
        ch.stack_level = int(c.get("stack_level", 0))
        ch.defaults = {int(k): float(v) for k, v in c.get("defaults", {}).items()}
        ch.flagged, ch.flagged_at = c.get("flagged"), _dt(c.get("flagged_at"))
        ch.caps = {
            int(k): CpmsCap(int(k), v[0], int(v[1]), v[2]) for k, v in c.get("caps", {}).items()
        }
        ch.profiles = ChargerProfiles(
            ch.version, tuple(_read_installed(p) for p in c.get("profiles", ()))
        )
        for conn, t in c.get("transactions", {}).items():
            since = _dt(t["charging_since"])
            assert since is not None
            ch.txs[int(conn)] = ConnectorLoad(
                t["transaction_id"],
                since,
                limit=t.get("limit"),
                limit_since=_dt(t.get("limit_since")),
                car_max=t.get("car_max"),
                car_estimate=t.get("car_estimate"),
                energy_start_wh=t.get("energy_start_wh"),
                energy_wh=t.get("energy_wh"),
                refresh=True,
                last_change=_dt(t.get("last_change")),
                running_since=_dt(t.get("running_since")),
                paused_since=_dt(t.get("paused_since")),
                energy_integrated_wh=float(t.get("energy_integrated_wh", 0.0)),
                departure=_dt(t.get("departure")),
                needs_energy_wh=t.get("needs_energy_wh"),
                needs_delivered_wh=float(t.get("needs_delivered_wh", 0.0)),
            )
        state.chargers[cid] = ch
    return state


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _installed(p: InstalledProfile) -> dict[str, Any]:
    """A profile the charger holds, so that the CPMS's limits survive a restart."""
    prof = p.profile
    return {
        "connector_id": p.connector_id,
        "installed_at": p.installed_at.isoformat(),
        "set_by": p.set_by,
        "id": prof.id,
        "stack_level": prof.stack_level,
        "purpose": prof.purpose.value,
        "kind": prof.kind.value,
        "recurrency": prof.recurrency,
        "valid_from": _iso(prof.valid_from),
        "valid_to": _iso(prof.valid_to),
        "transaction_id": prof.transaction_id,
        "schedules": [
            {
                "unit": s.unit,
                "duration": s.duration,
                "start": _iso(s.start),
                "min_rate": s.min_rate,
                "periods": [[q.start, q.limit, q.number_phases, q.phase_to_use] for q in s.periods],
            }
            for s in prof.schedules
        ],
    }


def _read_installed(d: dict[str, Any]) -> InstalledProfile:
    profile = ChargingProfile(
        id=int(d["id"]),
        stack_level=int(d["stack_level"]),
        purpose=ProfilePurpose(d["purpose"]),
        kind=ProfileKind(d["kind"]),
        schedules=tuple(
            ChargingSchedule(
                unit=s["unit"],
                periods=tuple(SchedulePeriod(*q) for q in s["periods"]),
                duration=s.get("duration"),
                start=_dt(s.get("start")),
                min_rate=s.get("min_rate"),
            )
            for s in d["schedules"]
        ),
        recurrency=d.get("recurrency"),
        valid_from=_dt(d.get("valid_from")),
        valid_to=_dt(d.get("valid_to")),
        transaction_id=d.get("transaction_id"),
    )
    installed_at = _dt(d["installed_at"])
    assert installed_at is not None
    return InstalledProfile(int(d["connector_id"]), profile, installed_at, str(d["set_by"]))
