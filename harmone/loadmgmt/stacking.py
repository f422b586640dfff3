"""What a charger applies from the charging profiles it holds: OCPP's stacking rules, pure.

`ChargerProfiles` is what one charger was sent and accepted — by the CPMS and by HARMON-E —
kept the way the charger keeps it (SetChargingProfile replaces, ClearChargingProfile removes,
a TxProfile ends with its transaction). `connector_limit` reads it the way the charger will:
for one connector at one instant, the current it may give the car and the station-wide cap
shared by all connectors, and until when that answer holds.

The rules (OCPP 1.6 §3.13, §5.5, §5.16 and the ChargingProfile / ChargingSchedule types;
2.0.1 Part 2 chapter K: K01, K02, K10 and the same types), in short: within a purpose, the
highest stack level that is in force and has a schedule period at the instant leads; a
TxProfile of the connector's transaction overrides the TxDefaultProfiles; the station-wide
purposes cap the station on top; the lowest limit is in force. docs/load-management.md "What
the charger applies" has the details and the choices made where the specifications leave one
to the charger.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby

from harmone.loadmgmt.stacking_schedule import (
    Cover,
    cover_at,
    fixed_edges,
    higher,
    lowest,
    next_edge,
)
from harmone.ocpp.events import ChargingProfile, ProfilePurpose, ProfilesCleared, ProfileSet
from harmone.ocpp.versions import OcppVersion

__all__ = [
    "STATION",
    "ChargerProfiles",
    "ConnectorLimit",
    "InstalledProfile",
    "Transaction",
    "connector_amps",
    "connector_limit",
]

#: connectorId / evseId of the whole charging station.
STATION = 0

_TX = ProfilePurpose.TX
_TX_DEFAULT = ProfilePurpose.TX_DEFAULT
_STATION_MAX = ProfilePurpose.STATION_MAX
_EXTERNAL = ProfilePurpose.EXTERNAL
#: Set by the station's own energy management; a CSMS can neither replace nor clear them (K10).
_NOT_CLEARABLE_2X = frozenset({_EXTERNAL, ProfilePurpose.LOCAL_GENERATION})
#: Once every fixed edge is past, recurring schedules repeat at least weekly: an answer that
#: holds for a whole week beyond that holds for ever.
_WEEK = timedelta(weeks=1)


@dataclass(frozen=True, slots=True)
class InstalledProfile:
    """A profile the charger accepted."""

    #: 1.6 connectorId / 2.x evseId; 0 = the whole station.
    connector_id: int
    profile: ChargingProfile
    #: When the charger accepted it.
    installed_at: datetime
    #: "cpms", "harmone", later other backends.
    set_by: str


@dataclass(frozen=True, slots=True)
class ChargerProfiles:
    """The profiles one charger holds. Immutable: every change returns a new value."""

    version: OcppVersion
    profiles: tuple[InstalledProfile, ...] = ()

    def set(
        self, connector_id: int, profile: ChargingProfile, at: datetime, set_by: str
    ) -> ChargerProfiles:
        """The charger accepted SetChargingProfile at `at`.

        A profile with the same id is replaced, wherever it was (1.6 §5.16.3, 2.0.1 K01.FR.05).
        1.6 also replaces the profile with the same stack level and purpose on the same
        connector (§3.13.2); a profile on connector 0 stays for the other connectors (§3.13.1).
        2.0.1 has the CSMS avoid such pairs instead (K01.FR.06, K01.FR.39); a charger that
        accepted both keeps both.
        """
        kept = tuple(p for p in self.profiles if not self._replaced(p, connector_id, profile))
        new = InstalledProfile(connector_id, profile, at, set_by)
        return ChargerProfiles(self.version, (*kept, new))

    def _replaced(self, old: InstalledProfile, connector_id: int, new: ChargingProfile) -> bool:
        if old.profile.id == new.id:
            return True
        return (
            self.version is OcppVersion.V16
            and old.connector_id == connector_id
            and old.profile.stack_level == new.stack_level
            and old.profile.purpose is new.purpose
        )

    def clear(
        self,
        *,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: ProfilePurpose | None = None,
        stack_level: int | None = None,
    ) -> ChargerProfiles:
        """The charger accepted ClearChargingProfile.

        Cleared: the profile with `profile_id`, and every profile that matches all the other
        criteria given; with no criteria at all, every profile. An id and criteria together
        clear both (1.6 §5.5 offers them as alternatives; clearing more never has HARMON-E
        count on a limit the charger dropped). 2.x never clears the station's own external
        constraints (K10).
        """
        criteria = (connector_id, purpose, stack_level) != (None, None, None)

        def cleared(p: InstalledProfile) -> bool:
            if self.version.is_2x and p.profile.purpose in _NOT_CLEARABLE_2X:
                return False
            if profile_id is None and not criteria:
                return True
            if p.profile.id == profile_id:
                return True
            return (
                criteria
                and connector_id in (None, p.connector_id)
                and purpose in (None, p.profile.purpose)
                and stack_level in (None, p.profile.stack_level)
            )

        return ChargerProfiles(self.version, tuple(p for p in self.profiles if not cleared(p)))

    def transaction_ended(self, connector_id: int, transaction_id: str) -> ChargerProfiles:
        """The transaction ended: its TxProfiles go with it (1.6 §3.13.1: "after the
        transaction is stopped, the profile SHOULD be deleted"; a 2.x TxProfile names its
        transaction, K01.FR.03, and applies to no other), and so do the TxProfiles without a
        transaction id on its connector, which were its too."""

        def ended(p: InstalledProfile) -> bool:
            if p.profile.purpose is not _TX:
                return False
            tx = p.profile.transaction_id
            return tx == transaction_id or (tx is None and p.connector_id == connector_id)

        return ChargerProfiles(self.version, tuple(p for p in self.profiles if not ended(p)))

    def apply(self, event: ProfileSet | ProfilesCleared, at: datetime) -> ChargerProfiles:
        """The same as `set` or `clear`, from the event the relay observed."""
        if isinstance(event, ProfileSet):
            return self.set(event.connector_id, event.profile, at, event.set_by)
        return self.clear(
            profile_id=event.profile_id,
            connector_id=event.connector_id,
            purpose=event.purpose,
            stack_level=event.stack_level,
        )


@dataclass(frozen=True, slots=True)
class Transaction:
    """The transaction running on the connector asked about."""

    id: str
    started_at: datetime


@dataclass(frozen=True, slots=True)
class ConnectorLimit:
    """What the charger applies to one connector at one instant."""

    #: A per phase; None: no profile limits this connector now.
    amps: float | None
    #: The station-wide max (ChargePointMax / ChargingStationMax / ExternalConstraints on the
    #: station), shared by all connectors together; None: none.
    station_amps: float | None
    #: The first instant after the one asked about at which this answer changes (a schedule
    #: edge, validFrom/validTo, a duration's end); None: not before something new is set,
    #: cleared or the transaction changes.
    until: datetime | None


@dataclass(frozen=True, slots=True)
class _Candidate:
    """An installed profile in the running for one purpose of one connector."""

    installed: InstalledProfile
    #: The transaction start a Relative schedule counts from (None: the instant asked about).
    tx_start: datetime | None

    @property
    def rank(self) -> tuple[int, bool]:
        # Within a stack level the connector's own profile goes before the station-wide one:
        # 1.6 §3.13.1 has a TxDefaultProfile on a connector replace the one on 0 "only for that
        # specific connector" (2.0.1 refuses such a pair, K01.FR.52/53).
        p = self.installed
        return p.profile.stack_level, p.connector_id != STATION

    def cover(self, at: datetime, phases: int, voltage: float) -> Cover | None:
        p = self.installed
        return cover_at(
            p.installed_at, p.profile, self.tx_start, at, phases=phases, voltage=voltage
        )


@dataclass(frozen=True, slots=True)
class _Purposes:
    """The candidates of each purpose that can limit one connector."""

    tx: tuple[_Candidate, ...]
    tx_default: tuple[_Candidate, ...]
    external: tuple[_Candidate, ...]
    station_max: tuple[_Candidate, ...]
    station_external: tuple[_Candidate, ...]

    def all(self) -> Iterator[_Candidate]:
        yield from self.tx
        yield from self.tx_default
        yield from self.external
        yield from self.station_max
        yield from self.station_external

    def answer(
        self, at: datetime, phases: int, voltage: float
    ) -> tuple[float | None, float | None]:
        """(amps, station_amps) at `at`."""
        tx = _leading(self.tx, at, phases, voltage)
        # The TxProfile overrides the TxDefaultProfiles wherever it has a period (1.6 §3.13.1);
        # where it has none, the charger falls back to them (§5.16.4).
        own = tx if tx is not None else _leading(self.tx_default, at, phases, voltage)
        amps = lowest((own, _leading(self.external, at, phases, voltage)))
        station = lowest(
            (
                _leading(self.station_max, at, phases, voltage),
                _leading(self.station_external, at, phases, voltage),
            )
        )
        return amps, station


def _leading(
    candidates: Iterable[_Candidate], at: datetime, phases: int, voltage: float
) -> Cover | None:
    """The leading profile's cover within one purpose: the highest stack level that is in
    force and has a period at `at` (a higher one without a period does not shadow it)."""
    ranked = sorted(candidates, key=lambda c: c.rank, reverse=True)
    for _, group in groupby(ranked, key=lambda c: c.rank):
        covers = [c for c in (g.cover(at, phases, voltage) for g in group) if c is not None]
        if covers:
            # Two profiles of one purpose and stack level both in force: 2.0.1 forbids sending
            # them (K01.FR.06/39) and leaves it to the charger; take the more permissive.
            best = covers[0]
            for cover in covers[1:]:
                best = higher(best, cover)
            return best
    return None


def _bound(profile: InstalledProfile, transaction: Transaction | None) -> bool:
    """Does this TxProfile belong to `transaction`?"""
    if transaction is None:
        return False
    if profile.profile.transaction_id is not None:
        return profile.profile.transaction_id == transaction.id
    # Without a transaction id (1.6 allows it) it belongs to the transaction running when it
    # was accepted: a TxProfile cannot be set outside a transaction (§5.16.4), so one accepted
    # before this transaction started was an earlier transaction's.
    return profile.installed_at >= transaction.started_at


def _purposes(
    profiles: ChargerProfiles,
    connector_id: int,
    transaction: Transaction | None,
    set_by: Container[str] | None,
) -> _Purposes:
    tx_start = transaction.started_at if transaction is not None else None
    tx: list[_Candidate] = []
    tx_default: list[_Candidate] = []
    external: list[_Candidate] = []
    station_max: list[_Candidate] = []
    station_external: list[_Candidate] = []
    for p in profiles.profiles:
        if set_by is not None and p.set_by not in set_by:
            continue
        purpose, on = p.profile.purpose, p.connector_id
        # A profile where its purpose may not be (a TxProfile on the station, a station max on
        # a connector) is one the charger refuses; if it accepted one anyway, it is not counted.
        if purpose is _TX and on == connector_id and _bound(p, transaction):
            tx.append(_Candidate(p, tx_start))
        elif purpose is _TX_DEFAULT and on in (STATION, connector_id):
            tx_default.append(_Candidate(p, tx_start))
        elif purpose is _EXTERNAL and on == connector_id:
            external.append(_Candidate(p, tx_start))
        elif purpose is _EXTERNAL and on == STATION:
            station_external.append(_Candidate(p, None))
        elif purpose is _STATION_MAX and on == STATION:
            station_max.append(_Candidate(p, None))
        # 2.1 PriorityCharging and LocalGeneration are not limits of their own: they take over
        # from the TxProfile / add to the external constraints only when activated, which
        # HARMON-E does not see; they are left out (see docs/load-management.md).
    return _Purposes(
        tuple(tx), tuple(tx_default), tuple(external), tuple(station_max), tuple(station_external)
    )


def connector_limit(
    profiles: ChargerProfiles,
    connector_id: int,
    at: datetime,
    transaction: Transaction | None,
    *,
    phases: int,
    voltage: float,
    set_by: Container[str] | None = None,
) -> ConnectorLimit:
    """The limit the charger applies to `connector_id` at `at`.

    `transaction` is the one running on the connector (None: idle; the answer is then what a
    car starting now would get). `phases` and `voltage` are the charger's, for W limits.
    `set_by` restricts which installers' profiles count (None: all of them), to ask what the
    charger would apply from the CPMS's profiles alone.
    """
    purposes = _checked(profiles, connector_id, at, transaction, phases, voltage, set_by)
    amps, station = purposes.answer(at, phases, voltage)
    until = _next_change(purposes, at, (amps, station), phases, voltage)
    return ConnectorLimit(amps, station, until)


def connector_amps(
    profiles: ChargerProfiles,
    connector_id: int,
    at: datetime,
    transaction: Transaction | None,
    *,
    phases: int,
    voltage: float,
    set_by: Container[str] | None = None,
) -> ConnectorLimit:
    """`connector_limit` without looking for `until` (left None): the cheap question, asked
    for every connector on every round."""
    purposes = _checked(profiles, connector_id, at, transaction, phases, voltage, set_by)
    amps, station = purposes.answer(at, phases, voltage)
    return ConnectorLimit(amps, station, None)


def _checked(
    profiles: ChargerProfiles,
    connector_id: int,
    at: datetime,
    transaction: Transaction | None,
    phases: int,
    voltage: float,
    set_by: Container[str] | None,
) -> _Purposes:
    if connector_id < 1:
        raise ValueError(f"connector_limit is per connector (>= 1), not {connector_id}")
    if phases < 1 or not voltage > 0:
        raise ValueError(f"phases {phases} and voltage {voltage} must be positive")
    if at.tzinfo is None:
        raise ValueError("`at` must be an aware datetime")
    return _purposes(profiles, connector_id, transaction, set_by)


def _next_change(
    purposes: _Purposes,
    at: datetime,
    now: tuple[float | None, float | None],
    phases: int,
    voltage: float,
) -> datetime | None:
    """The first edge after `at` at which the answer differs from `now`.

    Edges are visited in order. Between two fixed edges (installation, validity, the edges of
    schedules that do not recur) the answer repeats at least weekly, so a week without change
    since the last fixed edge means none until the next one: the walk jumps there.
    """
    candidates = list(purposes.all())
    fixed = sorted(
        {
            edge
            for c in candidates
            for edge in fixed_edges(c.installed.installed_at, c.installed.profile, c.tx_start)
            if edge > at
        }
    )
    segment_start = instant = at
    while True:
        edges = (
            next_edge(c.installed.installed_at, c.installed.profile, c.tx_start, instant)
            for c in candidates
        )
        following = min((e for e in edges if e is not None), default=None)
        if following is None:
            return None
        if following - segment_start > _WEEK:
            following = next((e for e in fixed if e > instant), None)
            if following is None:
                return None
        if purposes.answer(following, phases, voltage) != now:
            return following
        if following in fixed:
            segment_start = following
        instant = following
