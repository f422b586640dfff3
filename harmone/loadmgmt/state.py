"""The load state of one site, and the pure functions that update it.

`SiteLoadState` holds what load management knows about a site: per charger its connectors,
running transactions, measured draws, what it accepted and when, its flags and the CPMS's own
limits; the site's node readings and dynamic limits. It changes only through its methods, which
take typed OCPP events (`harmone.ocpp.events`), the outcomes of HARMON-E's own calls and the
time as arguments: no I/O, no clock, so that a test can replay any sequence exactly.

The central number is `exposure`: the most a connector may draw right now, as far as HARMON-E
can know — the highest limit the charger may be applying (an increase counts from the moment it
is sent, a decrease only once accepted and applied), or its measured draw if higher, or, for a
flagged charger, the most it could draw at all. The plan raises nobody while the exposures under
a node would then exceed its limit (docs/load-management.md, "Enforcement").
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from harmone.loadmgmt.charger_limits import (
    HARMONE,
    NextChanges,
    amps,
    applied,
    cpms_amps,
    own_stack_level,
    with_requested,
)
from harmone.loadmgmt.config import ChargerSettings, SiteLoadConfig, build_tree
from harmone.loadmgmt.loads import ChargerLoad, ConnectorLoad
from harmone.loadmgmt.model import AllocationOptions, Demand, Measurement, Node
from harmone.loadmgmt.sessions import demand_of, granted, integrate, needs_told
from harmone.loadmgmt.stacking import ChargerProfiles
from harmone.loadmgmt.timing import Timing
from harmone.loadmgmt.traffic import cpms_cap, current_per_phase, energy_register
from harmone.ocpp.events import (
    BootAnswered,
    ChargingNeeds,
    ChargingProfile,
    ConnectorStatusChanged,
    Event,
    MeterReading,
    ProfileRequested,
    ProfilesCleared,
    ProfileSet,
    TransactionEnded,
    TransactionStarted,
)
from harmone.ocpp.versions import OcppVersion

__all__ = [
    "NO_ANSWER",
    "OVERDRAW",
    "ChargerLoad",
    "ConnectorLoad",
    "SiteLoadState",
    "Timing",
]

NO_ANSWER = "does not answer its SetChargingProfile"
OVERDRAW = "draws more than its limit"
_ENDED_STATUSES = {"Available", "Unavailable", "Faulted"}
_EPS = 0.05  # A: limits are sent with one decimal


class SiteLoadState:
    """Everything load management knows about one site (see the module docstring)."""

    def __init__(self) -> None:
        self.chargers: dict[str, ChargerLoad] = {}
        self.measurements: dict[str, Measurement] = {}
        self.dynamic_limits: dict[str, float] = {}
        #: The latest instant the state was told about (what `demands` reads profiles at when
        #: it is not given one).
        self.latest: datetime | None = None
        self._untils = NextChanges()

    # -- chargers and events ---------------------------------------------------------------------
    def charger(self, charger_id: str, version: OcppVersion) -> ChargerLoad:
        state = self.chargers.get(charger_id)
        if state is None:
            state = self.chargers[charger_id] = ChargerLoad(version)
        elif state.version is not version:
            # Another protocol: nothing it accepted under the old one can be assumed.
            state.version, state.caps = version, {}
            state.profiles, state.watched = ChargerProfiles(version), False
            state.defaults, state.defaults_fresh = {}, set()
        return state

    def connected(self, charger_id: str, version: OcppVersion, booted: bool = False) -> None:
        state = self.charger(charger_id, version)
        state.connected, state.booted = True, booted
        # A reconnecting charger may have lost its profiles: send them again, but keep counting
        # what it accepted before, which is the most it may still be applying.
        state.defaults_fresh = set()
        state.call_since = None
        for tx in state.txs.values():
            tx.refresh, tx.sending = True, None

    def spoke(self, charger_id: str) -> bool:
        """The charger made a call: it is past its boot (one that reconnects without booting
        again is). True if that is news."""
        state = self.chargers.get(charger_id)
        if state is None or state.booted:
            return False
        state.booted = True
        return True

    def disconnected(self, charger_id: str) -> None:
        state = self.chargers.get(charger_id)
        if state is not None:
            state.connected = False

    def apply(
        self,
        charger_id: str,
        event: Event,
        settings: ChargerSettings,
        timing: Timing,
        now: datetime,
    ) -> bool:
        """Learn from one typed event of a connected charger; True if anything changed."""
        state = self.chargers.get(charger_id)
        if state is None:
            return False
        self.latest = now
        if isinstance(event, ConnectorStatusChanged):
            if event.connector_id > 0:
                state.connectors.add(event.connector_id)
                tx = state.txs.get(event.connector_id)
                if event.status in _ENDED_STATUSES and tx is not None:
                    self._end(state, tx.transaction_id, event.connector_id)
            return True
        if isinstance(event, TransactionStarted):
            tx = state.txs.get(event.connector_id)
            if tx is None or tx.transaction_id != event.transaction_id:
                tx = self._start(state, event.connector_id, event.transaction_id, now)
            if event.meter_start_wh is not None:
                tx.energy_start_wh = event.meter_start_wh
            return True
        if isinstance(event, TransactionEnded):
            self._end(state, event.transaction_id, event.connector_id)
            return True
        if isinstance(event, MeterReading):
            return self._reading(state, event, settings, timing, now)
        if isinstance(event, ChargingNeeds):
            tx = state.txs.get(event.connector_id)
            if tx is None:
                return False
            if event.ev_max_current is not None:
                tx.car_max = event.ev_max_current
            return needs_told(tx, event) or event.ev_max_current is not None
        if isinstance(event, BootAnswered):
            state.booted = event.accepted
            state.defaults_fresh = set()
            return state.booted
        if isinstance(event, ProfileRequested) and event.set_by == "cpms":
            cap = cpms_cap(event.connector_id, event.profile, settings.phases, settings.voltage)
            state.caps[cap.connector_id] = cap
            level = own_stack_level(state.stack_level, (event.profile,))
            if level != state.stack_level:
                state.stack_level = level
                self._refresh(state)
            # The charger may apply it as soon as it has it, before its answer is seen: what it
            # would raise counts until the answer is overdue (once accepted, it counts anyway).
            after = with_requested(state.profiles, event.connector_id, event.profile, now)
            self._changed(state, after, settings, now, timing.call_timeout, keep=False)
            return True
        if isinstance(event, ProfileSet):
            after = state.profiles.apply(event, now)
            self._changed(state, after, settings, now, timing.apply_bound)
            return event.set_by != HARMONE
        if isinstance(event, ProfilesCleared) and event.set_by == "cpms":
            target = event.connector_id
            for k in [k for k in state.caps if not target or k == target]:
                del state.caps[k]
            after = state.profiles.apply(event, now)
            self._changed(state, after, settings, now, timing.apply_bound)
            # The clear may have removed HARMON-E's own profiles too: send them again.
            self._refresh(state)
            return True
        return False

    def _changed(
        self,
        state: ChargerLoad,
        after: ChargerProfiles,
        settings: ChargerSettings,
        now: datetime,
        wait: float,
        keep: bool = True,
    ) -> None:
        """The charger's profiles become `after` (`keep` False: may become). Where that moves
        what a running car may draw, the higher of before and after counts for `wait` more
        seconds: a lower limit is applied only some time after it is accepted, a higher one
        may be applied the moment the charger has it."""
        for conn, tx in state.txs.items():
            before = self.applied_limit(state, conn, settings, now)
            then = self.applied_limit(state, conn, settings, now, after)
            if before is None or then is None or abs(before - then) <= _EPS:
                continue
            tx.previous = max(before, then, tx.previous or 0.0)
            until = now + timedelta(seconds=wait)
            tx.previous_until = max(until, tx.previous_until or until)
            tx.proof_below = None
        if keep:
            state.profiles = after

    def _reading(
        self,
        state: ChargerLoad,
        event: MeterReading,
        settings: ChargerSettings,
        timing: Timing,
        now: datetime,
    ) -> bool:
        conn: int | None = event.connector_id
        if conn is None:  # 2.x: only the transaction is named
            conn = next(
                (c for c, t in state.txs.items() if t.transaction_id == event.transaction_id),
                None,
            )
        if conn is None or conn < 1:
            return False
        if event.transaction_id is not None and conn not in state.txs:
            self._start(state, conn, event.transaction_id, now)
        tx = state.txs.get(conn)
        if tx is None:
            return False
        energy = energy_register(event.samples)
        if energy is not None:
            tx.energy_wh = energy
            if tx.energy_start_wh is None:
                tx.energy_start_wh = energy
        amps = current_per_phase(event.samples, settings.phases, settings.voltage)
        if amps is None:
            return energy is not None
        integrate(tx, amps, settings, now)
        tx.measured, tx.measured_at = amps, now
        draw = max(amps)
        # The car was seen following the lower limit: its old limit need not be counted any
        # more. (A car that already drew less proves nothing: it could still rise to the old.)
        if (
            tx.previous is not None
            and tx.proof_below is not None
            and draw <= tx.proof_below + timing.tolerance
        ):
            tx.previous = tx.previous_until = tx.proof_below = None
        return True

    def _start(
        self, state: ChargerLoad, conn: int, transaction_id: str, now: datetime
    ) -> ConnectorLoad:
        state.connectors.add(conn)
        tx = state.txs[conn] = ConnectorLoad(transaction_id, now)
        return tx

    @staticmethod
    def _end(state: ChargerLoad, transaction_id: str, connector_id: int | None) -> None:
        for conn, tx in list(state.txs.items()):
            if tx.transaction_id == transaction_id or connector_id == conn:
                del state.txs[conn]
                state.profiles = state.profiles.transaction_ended(conn, tx.transaction_id)

    @staticmethod
    def _refresh(state: ChargerLoad) -> None:
        state.defaults_fresh = set()
        for tx in state.txs.values():
            tx.refresh = True

    def measurement(self, m: Measurement) -> None:
        self.measurements[m.node_id] = m

    def set_dynamic_limit(self, node_id: str, limit: float | None) -> None:
        if limit is None:
            self.dynamic_limits.pop(node_id, None)
        else:
            self.dynamic_limits[node_id] = limit

    # -- outcomes of HARMON-E's own calls -------------------------------------------------------
    def call_sent(self, charger_id: str, conn: int, limit: float | None, now: datetime) -> None:
        """A call left for the charger; `limit` is a TxProfile's (None: a TxDefaultProfile)."""
        state = self.chargers[charger_id]
        state.call_since = now
        tx = state.txs.get(conn)
        if limit is not None and tx is not None:
            tx.sending = limit

    def call_accepted(
        self,
        charger_id: str,
        conn: int,
        transaction_id: str | None,
        limit: float,
        profile: ChargingProfile | None,
        settings: ChargerSettings,
        timing: Timing,
        now: datetime,
    ) -> None:
        """The charger accepted a TxProfile (`transaction_id` set) or TxDefaultProfile."""
        state = self.chargers[charger_id]
        state.call_since = None
        self.latest = now
        if state.flagged == NO_ANSWER or (state.flagged or "").startswith("rejected"):
            state.flagged = state.flagged_at = None
        # What the charger applied until now (a CPMS's profile may have led): a decrease from
        # there applies only some time after this answer too.
        before = self.applied_limit(state, conn, settings, now)
        if profile is not None:
            after = state.profiles.set(conn, profile, now, HARMONE)
            if transaction_id is None:
                self._changed(state, after, settings, now, timing.apply_bound)
            state.profiles, state.watched = after, True
        if transaction_id is None:
            state.defaults[conn] = limit
            state.defaults_fresh.add(conn)
            return
        tx = state.txs.get(conn)
        if tx is None or tx.transaction_id != transaction_id:
            return  # the transaction ended while the call was out
        tx.sending = None
        tx.refresh = False
        old = min(self.tx_limit(state, conn, tx), settings.max_current)
        old = max(old, before or 0.0)
        if limit < old - _EPS:
            tx.previous = max(old, tx.previous or 0.0)
            tx.previous_until = now + timedelta(seconds=timing.apply_bound)
            drawn = max(tx.measured) if tx.measured else None
            # Each decrease needs its own proof: one of an earlier, higher limit would not show
            # that this one is applied.
            above = drawn is not None and drawn > limit + timing.tolerance
            tx.proof_below = limit if above else None
        elif limit > old + _EPS:
            tx.last_increase = now
        if tx.limit is None or abs(limit - tx.limit) > _EPS:
            tx.last_change, tx.below_since = now, None
        tx.limit, tx.limit_since = limit, now
        granted(tx, limit, now)
        # A car already drawing more than the new limit keeps its time over the limit: if every
        # new limit restarted the count, a charger whose limit keeps moving would never be found.
        if tx.measured is None or max(tx.measured) <= limit + timing.tolerance:
            tx.over_since = None

    def call_failed(self, charger_id: str, conn: int, reason: str | None, now: datetime) -> None:
        """The call was rejected (`reason` says how) or got no answer at all (`reason` None)."""
        state = self.chargers.get(charger_id)
        if state is None:
            return
        state.call_since = None
        state.last_failure = now
        tx = state.txs.get(conn)
        if tx is not None and tx.sending is not None:
            # It may still be applied (a late answer): keep counting the higher of the two.
            if tx.limit is None or tx.sending > tx.limit:
                tx.limit = tx.sending
            tx.sending = None
        flag = NO_ANSWER if reason is None else reason
        if state.flagged != flag:
            state.flagged, state.flagged_at = flag, now

    def call_moot(self, charger_id: str, conn: int) -> None:
        """The call's transaction ended meanwhile: its outcome says nothing about the charger."""
        state = self.chargers.get(charger_id)
        if state is not None:
            state.call_since = None
            tx = state.txs.get(conn)
            if tx is not None:
                tx.sending = None

    def running(self, charger_id: str, conn: int, transaction_id: str | None) -> bool:
        """Whether `transaction_id` (None: any) still runs on the connector."""
        state = self.chargers.get(charger_id)
        tx = state.txs.get(conn) if state is not None else None
        return tx is not None and (transaction_id is None or tx.transaction_id == transaction_id)

    def call_late(self, charger_id: str, now: datetime) -> bool:
        """The call in flight is unanswered past the grace: flag the charger. True if new."""
        state = self.chargers.get(charger_id)
        if state is None or state.flagged == NO_ANSWER:
            return False
        state.flagged, state.flagged_at = NO_ANSWER, now
        return True

    # -- time ----------------------------------------------------------------------------------
    def review(
        self, config: SiteLoadConfig, timing: Timing, options: AllocationOptions, now: datetime
    ) -> list[str]:
        """What time alone changes: apply waits, give-back estimates, obedience. Returns the
        chargers newly flagged as drawing more than their limit."""
        flagged: list[str] = []
        grace = timedelta(seconds=timing.reaction_grace)
        for cid, state in self.chargers.items():
            over = obeyed = False
            for tx in state.txs.values():
                if tx.previous_until is not None and now >= tx.previous_until:
                    tx.previous = tx.previous_until = tx.proof_below = None
                draw = self._fresh_draw(tx, options, now)
                if draw is None or tx.limit is None:
                    continue
                allowed = max(tx.limit, tx.previous or 0.0, tx.sending or 0.0)
                if draw > allowed + timing.tolerance:
                    tx.over_since = tx.over_since or tx.measured_at
                elif draw <= tx.limit + timing.tolerance:
                    tx.over_since = None
                    settled = tx.previous is None and tx.limit_since is not None
                    obeyed = obeyed or (settled and tx.sending is None)
                if tx.over_since is not None and now - tx.over_since >= grace:
                    over = True
                self._give_back(tx, draw, timing, options, now)
            if over and state.flagged != OVERDRAW:
                state.flagged, state.flagged_at = OVERDRAW, now
                flagged.append(cid)
            # Only a car seen obeying lifts the flag: a charger whose car left has shown nothing,
            # and the next car on it would draw its max before it could be found out again.
            elif obeyed and not over and state.flagged == OVERDRAW:
                state.flagged = state.flagged_at = None
        return flagged

    @staticmethod
    def _give_back(
        tx: ConnectorLoad, draw: float, timing: Timing, options: AllocationOptions, now: datetime
    ) -> None:
        """Estimate what the car takes from a draw that stays well below its applied limit.

        The estimate (draw + margin, margin > threshold) caps the car until it draws near its
        cap, which it can only do if it wants more: a car that keeps drawing the same stays
        capped, so grants do not swing back and forth."""
        limit, since = tx.limit, tx.limit_since
        if limit is None or since is None or tx.previous is not None or tx.sending is not None:
            tx.below_since = None
            return
        if tx.measured_at is None or tx.measured_at <= since:
            return  # no reading under this limit yet
        if draw < limit - options.give_back_below:
            tx.below_since = tx.below_since or now
            # (readings on a fixed interval land exactly on the bound; float time may miss it)
            if now - tx.below_since >= timedelta(seconds=timing.give_back_after - 0.01):
                estimate = math.ceil((draw + options.give_back_margin) * 10 - 1e-6) / 10
                tx.car_estimate = estimate
            return
        tx.below_since = None
        if tx.car_estimate is not None and limit >= tx.car_estimate - _EPS:
            tx.car_estimate = None  # it draws up to its cap: it may want more

    @staticmethod
    def _fresh_draw(tx: ConnectorLoad, options: AllocationOptions, now: datetime) -> float | None:
        if tx.measured is None or tx.measured_at is None:
            return None
        if now - tx.measured_at > options.draw_max_age:
            return None
        return max(tx.measured)

    def next_change(
        self, config: SiteLoadConfig | None = None, now: datetime | None = None
    ) -> datetime | None:
        """The earliest instant time alone changes an exposure (an apply wait ends) or, given
        `config` and `now`, what a charger applies from its profiles or what the CPMS's allow a
        running car (a schedule's next period, a validity's end): plan again right then."""
        ends = [
            tx.previous_until
            for ch in self.chargers.values()
            for tx in ch.txs.values()
            if tx.previous_until is not None
        ]
        if config is not None and now is not None:
            for cid, ch in self.chargers.items():
                settings = config.settings_for(cid)
                for conn in ch.txs:
                    tx = ch.transaction(conn)
                    until = self._untils.next((cid, conn), ch.profiles, conn, tx, settings, now)
                    if until is not None:
                        ends.append(until)
        return min(ends) if ends else None

    # -- what follows from the state ---------------------------------------------------------------
    def cpms_limit(
        self,
        charger_id: str,
        connector_id: int,
        now: datetime | None = None,
        settings: ChargerSettings | None = None,
    ) -> float | None:
        """What the CPMS's own profiles allow on this connector at `now` (None: no limit), read
        by the stacking resolver the way the charger reads them, with the connector's running
        transaction bound (`charger_limits.cpms_amps`). `now` None: the latest instant known."""
        state = self.chargers.get(charger_id)
        at = now or self.latest
        if state is None or at is None:
            return None
        tx = state.transaction(connector_id)
        return cpms_amps(state.profiles, connector_id, at, tx, settings or ChargerSettings())

    def applied_limit(
        self,
        state: ChargerLoad,
        conn: int,
        settings: ChargerSettings,
        now: datetime,
        profiles: ChargerProfiles | None = None,
    ) -> float | None:
        """The limit the charger applies to `conn` from all it accepted (inf: none), capped at
        the charger's max; None while HARMON-E does not know all the charger holds."""
        if not state.watched:
            return None
        held = state.profiles if profiles is None else profiles
        limit = amps(applied(held, conn, now, state.transaction(conn), settings))
        return settings.max_current if limit is None else min(limit, settings.max_current)

    @staticmethod
    def tx_limit(state: ChargerLoad, conn: int, tx: ConnectorLoad | None) -> float:
        """The limit the charger applies to this connector, as last accepted (no estimate)."""
        if tx is not None and tx.limit is not None:
            return tx.limit
        default = state.defaults.get(conn)
        return math.inf if default is None else default

    def exposure(
        self,
        charger_id: str,
        conn: int,
        settings: ChargerSettings,
        options: AllocationOptions,
        now: datetime,
    ) -> float:
        """The most this connector may draw now, per phase (see the module docstring)."""
        state = self.chargers[charger_id]
        tx = state.txs.get(conn)
        worst = settings.max_current
        draw = self._fresh_draw(tx, options, now) if tx is not None else None
        if state.flagged or (tx is not None and tx.over_since is not None):
            return max(worst, draw or 0.0)
        limit = min(self.tx_limit(state, conn, tx), worst)
        # What the charger applies from everything it holds may be more than HARMON-E's own
        # profile says (a CPMS's profile leading, a clear), never counted less than that.
        applied_now = self.applied_limit(state, conn, settings, now)
        if applied_now is not None:
            limit = max(limit, applied_now)
        if tx is not None:
            limit = max(limit, tx.sending or 0.0, tx.previous or 0.0, draw or 0.0)
        return limit

    def ignoring(self, config: SiteLoadConfig) -> frozenset[str]:
        """Chargers whose draw is reserved instead of granted: flagged, over their limit now, or
        with an idle connector whose TxDefaultProfile is not known (a car may draw its max)."""

        def unknown_default(cid: str, s: ChargerLoad) -> bool:
            conns = set(config.settings_for(cid).connectors) | s.connectors
            return any(c not in s.txs and c not in s.defaults for c in conns)

        return frozenset(
            cid
            for cid, s in self.chargers.items()
            if s.flagged
            or any(tx.over_since is not None for tx in s.txs.values())
            or unknown_default(cid, s)
        )

    def tree(self, config: SiteLoadConfig) -> Node:
        chargers = {
            cid: tuple(sorted(s.connectors | set(s.txs))) for cid, s in self.chargers.items()
        }
        return build_tree(config, chargers, self.ignoring(config), self.dynamic_limits)

    def demands(self, config: SiteLoadConfig, now: datetime | None = None) -> list[Demand]:
        """The allocator's view of every running transaction (the one place it is built), with
        the CPMS's limits at `now` (None: the latest instant known)."""
        out = []
        at = now or self.latest
        for cid, state in self.chargers.items():
            settings = config.settings_for(cid)
            for conn, tx in state.txs.items():
                cpms = None
                if at is not None:
                    cpms = cpms_amps(state.profiles, conn, at, state.transaction(conn), settings)
                caps = [tx.car_max, tx.car_estimate, cpms]
                known = [c for c in caps if c is not None]
                measured = tx.measured
                if measured is not None and len(measured) != settings.phases:
                    measured = None  # read before a configuration change
                if state.flagged and measured and max(measured) <= settings.max_current:
                    measured = None  # counted at its max current: the most it could draw
                car_max = min(known) if known else None
                out.append(demand_of(cid, conn, tx, settings, measured, car_max))
        return out
