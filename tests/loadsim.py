"""A site of model chargers driven through the real load state, plan and controller loop on a
manual clock: minutes of simulated time in milliseconds, deterministic, no sockets.

A `ModelCharger` answers SetChargingProfile after its `answer_delay` (None: never), or rejects it,
and *applies* a new limit the way the worst real charger may: an increase at once (the moment it
receives it), a decrease only `apply_delay` after it answered (at most `Timing.apply_bound`). Its
car draws min(car max, limit) — nothing below the charger's min current — or, if it `disobeys`,
its max whatever the limit. Readings go to HARMON-E as MeterReading events every
`meter_interval`, as a charger's MeterValues would.

With `stacking`, the charger keeps every profile it accepted, HARMON-E's and the CPMS's
(`SiteSim.cpms_set` / `cpms_clear`), and its limit is what OCPP's stacking rules give, read by
the straightforward reference of tests/test_stacking.py (not by the resolver under test); while
a change is applying, the higher of before and after holds. A CPMS's profile may raise a
charger above what HARMON-E gave it until HARMON-E has placed its own above again: for
`reaction` seconds after one, only what the charger had before counts against its nodes.

`SiteSim.violations` collects every instant at which, under a node and on a phase, the building
load plus the sum over chargers of max(limit the charger applies, its draw) exceeded what the node
allows. A lowered node limit and a higher building load are events HARMON-E can only react to:
for `reaction` seconds after one, the highest allowance of that window holds (see `allowance`).
A charger HARMON-E cannot lower (silent, rejecting, or seen drawing more than its limit) is out of
its hands: from `reaction` after that, the others must fit into what it leaves.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from stacking_reference import RefCharger, ref_limit

from harmone.clock import ManualClock
from harmone.loadmgmt.config import SiteLoadConfig, parse_config
from harmone.loadmgmt.controller import SiteController
from harmone.loadmgmt.model import AllocationOptions, Measurement
from harmone.loadmgmt.stacking import Transaction
from harmone.loadmgmt.state import SiteLoadState, Timing
from harmone.ocpp.events import (
    BootAnswered,
    ChargingProfile,
    ConnectorStatusChanged,
    Event,
    MeterReading,
    ProfilePurpose,
    ProfileRequested,
    ProfilesCleared,
    ProfileSet,
    Sample,
    TransactionEnded,
    TransactionStarted,
    parse_charging_profile,
)
from harmone.ocpp.versions import OcppVersion

PHASES = {"L1": 0, "L2": 1, "L3": 2}


@dataclass
class ModelCharger:
    cid: str
    node: str
    max_current: float = 32.0
    min_current: float = 6.0
    rotation: tuple[str, ...] = ("L1", "L2", "L3")
    version: OcppVersion = OcppVersion.V16
    answer_delay: float | None = 0.05
    apply_delay: float = 0.5
    rejects: bool = False
    disobeys: bool = False
    #: when it stopped answering or started rejecting (set by the test)
    out_of_control_at: float | None = None
    #: TxDefaultProfile and TxProfile limits the charger applies (None: none: its max).
    default: float | None = None
    tx_limit: float | None = None
    car: float | None = None  # the car's max current while one is plugged in
    tx_id: str | None = None
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    #: (time, limit) of every change of the limit it applies
    applied: list[tuple[float, float]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Apply profiles by OCPP's stacking rules (see the module docstring).
    stacking: bool = False
    clock: Any = None
    holdings: RefCharger | None = None
    #: [until (None: not answered yet), what it held before a change still applying]
    fading: list[list[Any]] = field(default_factory=list)
    tx_started: Any = None
    #: Until when a CPMS's profile may hold it above what HARMON-E gave it, and its load per
    #: grid phase before (see `SiteSim.check`).
    cpms_until: float | None = None
    cpms_pre: list[float] = field(default_factory=list)
    _memo: tuple[Any, float] | None = None

    def __post_init__(self) -> None:
        self.holdings = RefCharger(self.version)

    def hold(self, change: Any) -> list[Any]:
        """Apply `change` to what it holds; until answered (and applied), the old holds too."""
        assert self.holdings is not None
        old = RefCharger(self.version)
        old.store = list(self.holdings.store)
        change(self.holdings)
        entry: list[Any] = [None, old]
        self.fading.append(entry)
        self._memo = None
        return entry

    def end(self, tx_id: str) -> None:
        for ref in (self.holdings, *(old for _, old in self.fading)):
            assert ref is not None
            ref.end(1, tx_id)
        self._memo = None

    def _stacked(self) -> float:
        t = self.clock.monotonic()
        key = (t, len(self.fading), self.tx_id)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        self.fading = [e for e in self.fading if e[0] is None or e[0] > t]
        now = self.clock.now()
        tx = None if self.tx_id is None else Transaction(self.tx_id, self.tx_started)
        values = []
        for ref in (self.holdings, *(old for _, old in self.fading)):
            amps, station = ref_limit(ref, 1, now, tx, len(self.rotation), 230.0, None)
            known = [v for v in (amps, station) if v is not None]
            values.append(min([*known, self.max_current]))
        value = max(values)
        self._memo = ((t, len(self.fading), self.tx_id), value)
        return value

    @property
    def limit(self) -> float:
        """The limit the charger applies now."""
        if self.stacking:
            return self._stacked()
        value = self.tx_limit if self.tx_id is not None and self.tx_limit is not None else None
        if value is None:
            value = self.default
        return self.max_current if value is None else min(value, self.max_current)

    def draw(self) -> float:
        if self.car is None:
            return 0.0
        car = min(self.car, self.max_current)
        amps = car if self.disobeys else min(car, self.limit)
        return amps if amps >= self.min_current else 0.0

    def grid(self, amps: float) -> list[float]:
        out = [0.0, 0.0, 0.0]
        for phase in self.rotation:
            out[PHASES[phase]] += amps
        return out

    def config(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "max_current": self.max_current,
            "min_current": self.min_current,
            "phases": len(self.rotation),
            "phase_rotation": list(self.rotation),
        }


class SiteSim:
    """One site: a tree from `config`, model chargers, a controller on a manual clock."""

    def __init__(
        self,
        raw_config: dict[str, Any],
        chargers: list[ModelCharger],
        timing: Timing,
        options: AllocationOptions,
        *,
        meter_interval: float = 0.5,
        building: dict[str, list[float]] | None = None,
        clock: Any = None,
    ) -> None:
        raw = dict(raw_config)
        raw["chargers"] = {c.cid: c.config() for c in chargers}
        self.config: SiteLoadConfig = parse_config(raw)
        self.chargers = {c.cid: c for c in chargers}
        self.timing, self.options = timing, options
        self.clock = clock or ManualClock()
        for c in chargers:
            c.clock = self.clock
        self.state = SiteLoadState()
        self.ctl = SiteController(
            "SIM", self.config, self.state, self._send, self.clock, options, timing
        )
        self.meter_interval = meter_interval
        #: building load behind each metered node, per grid phase, and whether its meter is up
        self.building = building or {}
        self.meter_up = dict.fromkeys(self.building, True)
        self.last_push: dict[str, float] = {}
        self.dynamic: dict[str, float | None] = {}
        self.parents = {}
        stack = [(self.config.tree, None)]
        while stack:
            node, parent = stack.pop()
            self.parents[node.id] = parent
            stack.extend((c, node.id) for c in node.children if hasattr(c, "children"))
        #: (time, node, phase) -> allowance history for the reaction window
        self.history: dict[tuple[str, int], deque[tuple[float, float]]] = {}
        self.revealed: dict[str, float] = {}  # charger -> when its overdraw was first reported
        self.violations: list[str] = []
        self.small_grants: list[str] = []
        self.reaction = (
            timing.tick
            + timing.answer_grace
            + 2 * (timing.debounce + timing.apply_bound + self._slowest_answer())
            + meter_interval
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.checking = False  # from the end of `start`: before, no charger has its default

    def _slowest_answer(self) -> float:
        delays = [c.answer_delay for c in self.chargers.values() if c.answer_delay is not None]
        return max([*delays, 0.0])

    # -- the model chargers' side ----------------------------------------------------------------
    async def _send(self, cid: str, payload: dict[str, Any]) -> Any:
        c = self.chargers[cid]
        async with c.lock:  # a charger handles one call at a time
            c.received.append((self.clock.monotonic(), payload))
            if c.answer_delay is None:
                await asyncio.get_running_loop().create_future()  # never answers
            prof = payload.get("csChargingProfiles") or payload["chargingProfile"]
            purpose = prof["chargingProfilePurpose"]
            sched = prof["chargingSchedule"]
            sched = sched[0] if isinstance(sched, list) else sched
            limit = float(sched["chargingSchedulePeriod"][0]["limit"])
            tx = prof.get("transactionId")
            if purpose == "TxProfile" and limit != 0 and limit < c.min_current:
                self.small_grants.append(f"t={self.clock.monotonic():.2f} {cid}: {limit} A")
            if c.rejects or (purpose == "TxProfile" and str(tx) != c.tx_id):
                await self.clock.sleep(c.answer_delay)
                return {"status": "Rejected"}
            if c.stacking:
                v16 = "csChargingProfiles" in payload
                conn = payload["connectorId"] if v16 else payload["evseId"]
                profile = parse_charging_profile(prof, v16)
                if purpose == "TxDefaultProfile":
                    c.default = limit
                now = self.clock.now()
                entry = c.hold(lambda ref: ref.set(conn, profile, now, "harmone"))
                self._changed(c)
                await self.clock.sleep(c.answer_delay)
                self._applying(c, entry)
                return {"status": "Accepted"}
            lower = limit < (c.limit if purpose == "TxProfile" else (c.default or math.inf))
            if not lower:
                self._set(c, purpose, limit)  # the worst case: an increase applies at once
            await self.clock.sleep(c.answer_delay)
            if lower:
                asyncio.get_running_loop().create_task(self._apply_later(c, purpose, limit, tx))
            return {"status": "Accepted"}

    async def _apply_later(self, c: ModelCharger, purpose: str, limit: float, tx: Any) -> None:
        await self.clock.sleep(c.apply_delay)
        if purpose == "TxDefaultProfile" or str(tx) == c.tx_id:
            self._set(c, purpose, limit)

    def _changed(self, c: ModelCharger) -> None:
        c.applied.append((self.clock.monotonic(), c.limit))
        self.check()

    def _applying(self, c: ModelCharger, entry: list[Any]) -> None:
        """Answered: what it held before counts `apply_delay` more."""
        entry[0] = self.clock.monotonic() + c.apply_delay
        c._memo = None

        async def applied() -> None:
            await self.clock.sleep(c.apply_delay)
            self._changed(c)

        self._tasks.append(asyncio.get_running_loop().create_task(applied()))

    # -- the CPMS's side: its profiles pass through the relay ----------------------------------
    def spawn(self, call: Any) -> None:
        """Run a CPMS call alongside (it takes the charger's answer delay)."""
        self._tasks.append(asyncio.get_running_loop().create_task(call))

    def _cpms_window(self, c: ModelCharger) -> None:
        t = self.clock.monotonic()
        if c.cpms_until is None or t >= c.cpms_until:
            limit, draw = c.grid(c.limit), c.grid(c.draw())
            c.cpms_pre = [max(a, b) for a, b in zip(limit, draw, strict=True)]
        c.cpms_until = t + self.reaction

    async def cpms_set(self, cid: str, conn: int, profile: ChargingProfile) -> None:
        """The CPMS sends SetChargingProfile: HARMON-E sees it on its way; the charger applies
        it if it answers calls at all and accepts it (OCPP's rules for where a purpose may be)."""
        c = self.chargers[cid]
        self._cpms_window(c)
        self.feed(cid, ProfileRequested(conn, profile, "cpms"))
        if c.answer_delay is None or c.rejects:
            return
        async with c.lock:
            purpose = profile.purpose
            refused = (
                (purpose is ProfilePurpose.TX and (conn == 0 or c.tx_id is None))
                or (purpose is ProfilePurpose.TX and profile.transaction_id not in (None, c.tx_id))
                or (purpose is ProfilePurpose.STATION_MAX and conn != 0)
            )
            if refused:
                await self.clock.sleep(c.answer_delay)
                return
            now = self.clock.now()
            entry = c.hold(lambda ref: ref.set(conn, profile, now, "cpms"))
            self._cpms_window(c)
            self._changed(c)
            await self.clock.sleep(c.answer_delay)
            self._applying(c, entry)
            self.feed(cid, ProfileSet(conn, profile, "cpms"))

    async def cpms_clear(self, cid: str, criteria: dict[str, Any]) -> None:
        """The CPMS sends ClearChargingProfile (criteria as in `ProfilesCleared`)."""
        c = self.chargers[cid]
        if c.answer_delay is None or c.rejects or c.holdings is None:
            return
        async with c.lock:
            before = len(c.holdings.store)
            self._cpms_window(c)
            entry = c.hold(lambda ref: ref.clear(**criteria))
            self._changed(c)
            await self.clock.sleep(c.answer_delay)
            self._applying(c, entry)
            if len(c.holdings.store) != before:  # else "Unknown": nothing changed, no event
                self.feed(cid, ProfilesCleared(**criteria, set_by="cpms"))

    def _set(self, c: ModelCharger, purpose: str, limit: float) -> None:
        if purpose == "TxDefaultProfile":
            c.default = limit
        else:
            c.tx_limit = limit
        c.applied.append((self.clock.monotonic(), c.limit))
        self.check()

    # -- HARMON-E's side: what the relay would report ---------------------------------------------
    def feed(self, cid: str, *events: Event) -> None:
        settings = self.config.settings_for(cid)
        changed = False
        for e in events:
            changed = self.state.apply(cid, e, settings, self.timing, self.clock.now()) or changed
        if changed:
            self.ctl.poke()

    async def start(self) -> None:
        """Chargers connect and boot; every TxDefaultProfile is accepted before anything else."""
        for c in self.chargers.values():
            self.state.connected(c.cid, c.version)
            self.feed(
                c.cid, BootAnswered(True, "Accepted", 60), ConnectorStatusChanged(1, "Available")
            )
        for node in self.building:
            self.push(node)
        self.ctl.start()
        self._tasks.append(asyncio.create_task(self._meters()))
        for _ in range(100):
            await self._pass(0.1)
            if all(c.default is not None and not c.fading for c in self.chargers.values()):
                break
        for c in self.chargers.values():
            if c.stacking:  # from here on: what it applied while booting is no news
                c.applied = [(self.clock.monotonic(), c.limit)]
        self.history.clear()
        self.checking = True
        self.check()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ctl.stop()

    async def _meters(self) -> None:
        while True:
            await self.clock.sleep(self.meter_interval)
            for c in self.chargers.values():
                if c.tx_id is not None:
                    self.reading(c)
            for node, up in self.meter_up.items():
                if up:
                    self.push(node)

    def reading(self, c: ModelCharger) -> None:
        amps = c.draw()
        if c.disobeys and amps > c.limit + self.timing.tolerance and c.cid not in self.revealed:
            self.revealed[c.cid] = self.clock.monotonic()
        samples = tuple(
            Sample("Current.Import", amps, f"L{i + 1}", "A") for i in range(len(c.rotation))
        )
        self.feed(c.cid, MeterReading(1, c.tx_id, None, samples))

    def push(self, node: str) -> None:
        self.last_push[node] = self.clock.monotonic()
        load = self.building[node]
        self.state.measurement(Measurement(node, (load[0], load[1], load[2]), self.clock.now()))
        self.ctl.poke()

    # -- what happens ----------------------------------------------------------------------------
    def arrive(self, cid: str, car: float, tx_id: str) -> None:
        c = self.chargers[cid]
        c.car, c.tx_id, c.tx_limit = car, tx_id, None
        c.tx_started, c._memo = self.clock.now(), None
        self.check()
        self.feed(cid, ConnectorStatusChanged(1, "Charging"), TransactionStarted(1, tx_id))

    def leave(self, cid: str) -> None:
        c = self.chargers[cid]
        if c.tx_id is None:
            return
        tx, c.car, c.tx_id, c.tx_limit = c.tx_id, None, None, None
        if c.stacking:
            c.end(tx)
        self.feed(cid, TransactionEnded(tx, 1), ConnectorStatusChanged(1, "Available"))

    def set_dynamic(self, node: str, limit: float | None) -> None:
        self.dynamic[node] = limit
        self.note_allowance()
        self.state.set_dynamic_limit(node, limit)
        self.ctl.poke()

    def set_building(self, node: str, load: list[float]) -> None:
        self.note_allowance()
        self.building[node] = load
        self.check()
        if self.meter_up.get(node):
            self.push(node)

    # -- the invariant ---------------------------------------------------------------------------
    def _stale(self, node_id: str) -> bool:
        age = self.clock.monotonic() - self.last_push.get(node_id, -math.inf)
        return node_id in self.building and age > self.options.meter_max_age.total_seconds()

    def allowance(self, node_id: str, phase: int) -> float:
        """What the chargers under the node may draw on the phase now: its limit less the
        building load behind it; while its own meter has failed, its safety current."""
        node = next(n for n in self.config.tree.walk() if n.id == node_id)
        limit = node.max_current  # type: ignore[union-attr]
        dyn = self.dynamic.get(node_id)
        if dyn is not None:
            limit = min(limit, dyn)
        if self._stale(node_id):
            return min(limit, node.safety_current)  # type: ignore[union-attr]
        load = 0.0
        for metered, amps in self.building.items():
            n: str | None = metered
            while n is not None:
                if n == node_id:
                    load += amps[phase]
                    break
                n = self.parents[n]
        return limit - load

    def note_allowance(self) -> None:
        for node_id in self.parents:
            for p in range(3):
                hist = self.history.setdefault((node_id, p), deque())
                hist.append((self.clock.monotonic(), self.allowance(node_id, p)))

    def check(self) -> None:
        t = self.clock.monotonic()
        # A decrease may wait for a call already in flight, and a slow charger is found out
        # only after `answer_grace`: reaction grows with the slowest charger as it is now.
        slowest = self._slowest_answer()
        self.reaction = (
            self.timing.tick
            + self.timing.answer_grace
            + 3 * (self.timing.debounce + slowest)
            + 2 * self.timing.apply_bound
            + self.meter_interval
        )
        self.note_allowance()
        if not self.checking:
            return
        for node_id in self.parents:
            below = [c for c in self.chargers.values() if self._under(c, node_id)]
            for p in range(3):
                ctrl = unc = forgiven = 0.0
                for c in below:
                    limit_here = c.grid(c.limit)[p]
                    term = max(limit_here, c.grid(c.draw())[p])
                    if c.cpms_until is not None and t < c.cpms_until:
                        # A CPMS's profile may hold it above what HARMON-E gave it until HARMON-E
                        # has placed its own above again: only what it had before counts.
                        limit_here = min(limit_here, c.cpms_pre[p])
                        term = min(term, c.cpms_pre[p])
                    since = self._out_of_control(c)
                    if since is None:
                        # a car not yet seen disobeying is counted at its limit until it is
                        ctrl += limit_here if c.disobeys else term
                        continue
                    unc += term
                    if t < since + self.reaction:
                        forgiven += term
                hist = self.history[(node_id, p)]
                while len(hist) > 1 and hist[1][0] <= t - self.reaction:
                    hist.popleft()
                allowed = max(0.0, max(a for _, a in hist) - unc) + forgiven
                if ctrl > allowed + 1e-6:
                    self.violations.append(
                        f"t={t:.2f} node {node_id} L{p + 1}: {ctrl:.1f} A > {allowed:.1f} A "
                        f"({ {c.cid: (c.limit, c.draw()) for c in below} })"
                    )

    def _out_of_control(self, c: ModelCharger) -> float | None:
        """Since when HARMON-E cannot lower this charger (None: it can)."""
        times = [c.out_of_control_at, self.revealed.get(c.cid) if c.disobeys else None]
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def _under(self, c: ModelCharger, node_id: str) -> bool:
        n: str | None = c.node
        while n is not None:
            if n == node_id:
                return True
            n = self.parents[n]
        return False

    async def _pass(self, seconds: float) -> None:
        if isinstance(self.clock, ManualClock):
            await self.clock.advance(seconds)
        else:
            await self.clock.sleep(seconds)

    async def run(self, seconds: float, step: float = 0.1) -> None:
        end = self.clock.monotonic() + seconds
        while self.clock.monotonic() < end - 1e-9:
            await self._pass(min(step, end - self.clock.monotonic()))
            self.check()
