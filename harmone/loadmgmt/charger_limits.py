"""Load management's questions to the stacking resolver (`stacking.py`), in one place.

Two questions, both per connector and instant, with the running transaction bound:

* `cpms_amps`: what the CPMS's own profiles allow (the cap the allocator honours). The CPMS's
  profiles are read alone, as the charger would apply them if HARMON-E had sent nothing: a
  TxProfile of the transaction overrides the TxDefaultProfiles, a TxProfile of an ended
  transaction counts for nothing, schedules are read at the instant.
* `applied_amps`: what the charger applies from everything it accepted, HARMON-E's own
  profiles included (what `exposure` counts).

`own_stack_level` places HARMON-E's profiles: above every Tx/TxDefault profile of the CPMS, so
that HARMON-E's TxProfile leads (the charger then applies min(HARMON-E's grant, the station-wide
caps), and the grant is never above `cpms_amps`), and never on a CPMS's (connector, purpose,
level), which 1.6 would have it replace (docs/load-management.md, "The CPMS's profiles").
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from datetime import datetime
from typing import Any, cast

from harmone.loadmgmt.config import ChargerSettings
from harmone.loadmgmt.stacking import (
    ChargerProfiles,
    ConnectorLimit,
    Transaction,
    connector_amps,
    connector_limit,
)
from harmone.ocpp.events import ChargingProfile, ProfilePurpose

__all__ = [
    "HARMONE",
    "NOT_HARMONE",
    "NextChanges",
    "amps",
    "applied",
    "cpms_amps",
    "own_stack_level",
    "with_requested",
]

HARMONE = "harmone"
#: Every installer but HARMON-E (the CPMS; a charger's own, should one ever be reported).
NOT_HARMONE = frozenset({"cpms", "charger"})
_LEVELLED = (ProfilePurpose.TX, ProfilePurpose.TX_DEFAULT)


def applied(
    profiles: ChargerProfiles,
    connector_id: int,
    at: datetime,
    transaction: Transaction | None,
    settings: ChargerSettings,
    *,
    cpms_only: bool = False,
    until: bool = False,
) -> ConnectorLimit:
    """The resolver's answer for one connector (see `stacking.connector_limit`); its `until`
    only if asked for (finding it walks the schedules' edges)."""
    ask = connector_limit if until else connector_amps
    return ask(
        profiles,
        connector_id,
        at,
        transaction,
        phases=settings.phases,
        voltage=settings.voltage,
        set_by=NOT_HARMONE if cpms_only else None,
    )


def amps(limit: ConnectorLimit) -> float | None:
    """One connector's limit: its own, or the station-wide one if lower (a car alone on the
    station may take all of it). None: nothing limits it."""
    known = [v for v in (limit.amps, limit.station_amps) if v is not None]
    return min(known) if known else None


def cpms_amps(
    profiles: ChargerProfiles,
    connector_id: int,
    at: datetime,
    transaction: Transaction | None,
    settings: ChargerSettings,
) -> float | None:
    """What the CPMS's profiles alone allow this connector at `at` (None: no limit)."""
    return amps(applied(profiles, connector_id, at, transaction, settings, cpms_only=True))


def with_requested(
    profiles: ChargerProfiles, connector_id: int, profile: ChargingProfile, at: datetime
) -> ChargerProfiles:
    """The profiles as they will be if the charger accepts the CPMS's request (it may apply it
    from the moment it receives it, before its answer is seen)."""
    return profiles.set(connector_id, profile, at, "cpms")


def own_stack_level(current: int, cpms_profiles: Iterable[ChargingProfile]) -> int:
    """The stack level of HARMON-E's profiles: `current`, or above the highest Tx/TxDefault
    level the CPMS uses if that reaches it. Never lowered: a lower level would need the old
    profiles cleared first, and one level for the charger's life is simpler to reason about."""
    levels = [p.stack_level for p in cpms_profiles if p.purpose in _LEVELLED]
    top = max(levels, default=-1)
    return current if top < current else top + 1


class NextChanges:
    """The next instant at which what a charger applies, or what the CPMS's profiles allow,
    changes on its own (a schedule's period, a validity's end), per connector. Finding it walks
    schedule edges, so an answer is kept while nothing it depends on changes (the profiles are
    immutable values: a change is a new object) and the instant asked about has not reached it.
    """

    def __init__(self) -> None:
        self._kept: dict[Hashable, tuple[Any, ...]] = {}

    def next(
        self,
        key: Hashable,
        profiles: ChargerProfiles,
        connector_id: int,
        transaction: Transaction | None,
        settings: ChargerSettings,
        now: datetime,
    ) -> datetime | None:
        kept = self._kept.get(key)
        if kept is not None:
            k_profiles, k_tx, k_settings, since, until = kept
            if (
                k_profiles is profiles
                and (k_tx, k_settings) == (transaction, settings)
                and since <= now
                and (until is None or now < until)
            ):
                return cast("datetime | None", until)
        ends = [
            applied(profiles, connector_id, now, transaction, settings, cpms_only=c, until=True)
            for c in (True, False)
        ]
        found = min((e.until for e in ends if e.until is not None), default=None)
        self._kept[key] = (profiles, transaction, settings, now, found)
        return found
