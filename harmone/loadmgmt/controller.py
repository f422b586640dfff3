"""Turning allocations into SetChargingProfile calls, per site.

`SiteController` keeps what the relayed traffic says about a site (transactions, draws, the
CPMS's own limits), runs `allocate` when something changes (and on a tick, so that stale meters
and cars that ignore their limits are noticed), and sends profiles through the relay's own-call
mechanism. Safety rules (docs/load-management.md):

* Decreases are sent first and awaited before any increase, and are never rate-limited; only
  increases wait for `min_interval`.
* A charger that rejects its profile or keeps drawing more than its limit is flagged; the
  allocator then reserves its *measured* draw (or its max) instead of trusting its grant.
* A CPMS limit caps what HARMON-E grants; if the CPMS's profile could override HARMON-E's (same
  purpose, stack level at least as high), HARMON-E re-sends its own one level above it.
* If allocation ever fails, every managed connector is paused at 0 A.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from harmone.clock import Clock
from harmone.errors import HarmoneError
from harmone.loadmgmt.allocate import allocate
from harmone.loadmgmt.config import SiteLoadConfig, build_tree
from harmone.loadmgmt.model import Allocation, AllocationOptions, Demand, Measurement
from harmone.loadmgmt.profiles import Purpose, set_charging_profile
from harmone.loadmgmt.traffic import CpmsCap
from harmone.ocpp.versions import OcppVersion

__all__ = [
    "ChargerLoad",
    "ConnectorLoad",
    "Sample",
    "SendProfile",
    "SiteController",
    "Timing",
]

log = logging.getLogger(__name__)

#: (charger_id, payload) -> the charger's answer payload; raises HarmoneError on failure.
SendProfile = Callable[[str, dict[str, Any]], Awaitable[Any]]


@dataclass(slots=True)
class ConnectorLoad:
    transaction_id: str
    charging_since: datetime
    measured: tuple[float, ...] | None = None
    measured_at: datetime | None = None
    sent_limit: float | None = None
    sent_mono: float = float("-inf")
    limit_since: datetime | None = None
    over_since: datetime | None = None
    car_max: float | None = None


@dataclass(slots=True)
class ChargerLoad:
    version: OcppVersion
    connected: bool = True
    connectors: set[int] = field(default_factory=set)
    txs: dict[int, ConnectorLoad] = field(default_factory=dict)
    caps: dict[int, CpmsCap] = field(default_factory=dict)
    stack_level: int = 0
    default_sent: float | None = None
    booted: bool = False
    flagged: str | None = None  # why it is treated as ignoring its profile

    def cap(self, connector_id: int) -> float | None:
        caps = [
            c.amps for k, c in self.caps.items() if k in (0, connector_id) and c.amps is not None
        ]
        return min(caps) if caps else None


@dataclass(frozen=True, slots=True)
class Timing:
    """How fast the controller reacts; tests and simulations compress it."""

    #: Allocation also runs this often without events (stale meters, flags), s.
    tick: float = 5.0
    #: A car may draw above its limit this long (after settling) before it is flagged, s.
    reaction_grace: float = 30.0
    #: Drawing this much above the limit counts as not obeying (meter noise, rounding), A.
    tolerance: float = 1.0
    #: How long HARMON-E waits for a charger to answer SetChargingProfile, s.
    call_timeout: float = 15.0
    #: Events within this window are handled in one round, s.
    debounce: float = 0.02


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of the site's time series."""

    at: datetime
    nodes: tuple[dict[str, Any], ...]
    connectors: tuple[dict[str, Any], ...]


class SiteController:
    def __init__(
        self,
        site_uid: str,
        config: SiteLoadConfig,
        send: SendProfile,
        clock: Clock,
        options: AllocationOptions | None = None,
        timing: Timing | None = None,
        history: int = 720,
    ) -> None:
        self.site_uid = site_uid
        self.config = config
        self.options = options or AllocationOptions()
        self.timing = timing or Timing()
        self.chargers: dict[str, ChargerLoad] = {}
        self.measurements: dict[str, Measurement] = {}
        self.dynamic_limits: dict[str, float] = {}
        self.last: Allocation | None = None
        self.series: deque[Sample] = deque(maxlen=history)
        #: seconds from the event that woke a round to each profile it sent
        self.reaction_times: deque[float] = deque(maxlen=1000)
        self._send = send
        self._clock = clock
        self._wake = asyncio.Event()
        self._event_mono: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # -- life --------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"loadmgmt {self.site_uid}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def poke(self) -> None:
        """Something changed: run a round soon."""
        if self._event_mono is None:
            self._event_mono = time.monotonic()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.timing.tick)
            await asyncio.sleep(self.timing.debounce)  # a burst of events: one round
            self._wake.clear()
            try:
                await self.step()
            except Exception:
                log.exception("site=%s load management round failed", self.site_uid)

    # -- inputs ------------------------------------------------------------------------------
    def charger(self, charger_id: str, version: OcppVersion) -> ChargerLoad:
        state = self.chargers.get(charger_id)
        if state is None or state.version is not version:
            state = self.chargers[charger_id] = ChargerLoad(version)
        return state

    def connected(self, charger_id: str, version: OcppVersion) -> None:
        state = self.charger(charger_id, version)
        state.connected = True
        state.default_sent = None  # a reconnecting charger may have lost its profiles
        state.booted = False
        for tx in state.txs.values():
            tx.sent_limit = None
        self.poke()

    def disconnected(self, charger_id: str) -> None:
        state = self.chargers.get(charger_id)
        if state is not None:
            state.connected = False
            self.poke()

    def measurement(self, m: Measurement) -> None:
        self.measurements[m.node_id] = m
        self.poke()

    def set_dynamic_limit(self, node_id: str, limit: float | None) -> None:
        if limit is None:
            self.dynamic_limits.pop(node_id, None)
        else:
            self.dynamic_limits[node_id] = limit
        self.poke()

    def reconfigure(self, config: SiteLoadConfig) -> None:
        self.config = config
        for state in self.chargers.values():
            state.default_sent = None
        self.poke()

    # -- one round ---------------------------------------------------------------------------
    def demands(self, now: datetime) -> list[Demand]:
        out = []
        for cid, state in self.chargers.items():
            for conn, tx in state.txs.items():
                cap = state.cap(conn)
                car_max = (
                    tx.car_max
                    if cap is None
                    else (cap if tx.car_max is None else min(cap, tx.car_max))
                )
                out.append(
                    Demand(
                        cid,
                        conn,
                        tx.charging_since,
                        measured=tx.measured,
                        measured_at=tx.measured_at if tx.measured is not None else None,
                        limit_in_force=tx.sent_limit if tx.limit_since else None,
                        limit_since=tx.limit_since if tx.sent_limit is not None else None,
                        car_max=car_max,
                    )
                )
        return out

    def allocation_input(self, now: datetime) -> tuple[Any, list[Demand], list[Measurement]]:
        chargers = {
            cid: tuple(sorted(s.connectors | set(s.txs))) for cid, s in self.chargers.items()
        }
        ignoring = frozenset(cid for cid, s in self.chargers.items() if s.flagged)
        tree = build_tree(self.config, chargers, ignoring, self.dynamic_limits)
        return tree, self.demands(now), list(self.measurements.values())

    async def step(self) -> Allocation | None:
        """Allocate once and send what changed. Returns the allocation (None if disabled)."""
        async with self._lock:
            if not self.config.enabled:
                return None
            now = self._clock.now()
            self._check_obedience(now)
            try:
                tree, demands, measurements = self.allocation_input(now)
                allocation = allocate(
                    tree, demands, measurements, now, self.config.policy, options=self.options
                )
            except HarmoneError:
                log.exception(
                    "site=%s allocation failed: pausing every managed connector", self.site_uid
                )
                await self._send_all(
                    [
                        (cid, conn, 0.0)
                        for cid, s in self.chargers.items()
                        for conn in s.txs
                        if s.connected
                    ]
                )
                return None
            self.last = allocation
            self._record(allocation)
            await self._enforce(allocation)
            self._event_mono = None
            return allocation

    async def _enforce(self, allocation: Allocation) -> None:
        mono = self._clock.monotonic()
        decreases: list[tuple[str, int, float]] = []
        increases: list[tuple[str, int, float]] = []
        for grant in allocation.connectors:
            state = self.chargers.get(grant.charger_id)
            tx = state.txs.get(grant.connector_id) if state else None
            if state is None or tx is None or not state.connected:
                continue
            target = round(grant.limit_to_send, 1)
            if grant.reserved:  # flagged: it gets what its limit would be if it obeyed
                target = 0.0 if tx.sent_limit is None else min(tx.sent_limit, target)
            last = tx.sent_limit
            if last is None or target < last - 0.05:
                decreases.append((grant.charger_id, grant.connector_id, target))
            elif (
                target - last >= self.config.resend_step or (last == 0 and target > 0)
            ) and mono - tx.sent_mono >= self.config.min_interval:
                increases.append((grant.charger_id, grant.connector_id, target))
        defaults = [
            (cid, s)
            for cid, s in self.chargers.items()
            if s.connected and s.booted and s.default_sent is None
        ]
        for cid, state in defaults:
            await self._send_default(cid, state)
        await self._send_all(decreases)
        await self._send_all(increases)

    async def _send_default(self, cid: str, state: ChargerLoad) -> None:
        s = self.config.settings_for(cid)
        limit = s.tx_default_limit
        for conn in sorted(set(s.connectors) | state.connectors) or [1]:
            payload = set_charging_profile(
                state.version,
                "TxDefaultProfile",
                conn,
                limit,
                stack_level=state.stack_level,
                unit=s.rate_unit,
                phases=s.phases,
                voltage=s.voltage,
            )
            if not await self._call(cid, state, payload, "TxDefaultProfile"):
                return
        state.default_sent = limit

    async def _send_all(self, items: list[tuple[str, int, float]]) -> None:
        if items:
            await asyncio.gather(*(self._send_tx(*item) for item in items))

    async def _send_tx(self, cid: str, conn: int, amps: float) -> None:
        state = self.chargers[cid]
        tx = state.txs.get(conn)
        if tx is None:
            return
        s = self.config.settings_for(cid)
        payload = set_charging_profile(
            state.version,
            "TxProfile",
            conn,
            amps,
            transaction_id=tx.transaction_id,
            stack_level=state.stack_level,
            unit=s.rate_unit,
            phases=s.phases,
            voltage=s.voltage,
        )
        if self._event_mono is not None:
            self.reaction_times.append(time.monotonic() - self._event_mono)
        # The transaction may have ended while the call was out; then there is nothing to note.
        if await self._call(cid, state, payload, "TxProfile") and state.txs.get(conn) is tx:
            tx.sent_limit = amps
            tx.sent_mono = self._clock.monotonic()
            tx.limit_since = self._clock.now()
            # A car already drawing more than the new limit keeps its time over the limit: if
            # every new limit restarted the count, a charger whose limit keeps moving would
            # never be found out.
            if tx.measured is None or max(tx.measured) <= amps + self.timing.tolerance:
                tx.over_since = None

    async def _call(
        self, cid: str, state: ChargerLoad, payload: dict[str, Any], purpose: Purpose
    ) -> bool:
        ctx = f"site={self.site_uid} charger={cid}"
        try:
            answer = await self._send(cid, payload)
        except HarmoneError as exc:
            log.warning("%s %s not delivered: %s", ctx, purpose, exc)
            return False
        status = answer.get("status") if isinstance(answer, dict) else None
        if status == "Accepted":
            if state.flagged and state.flagged.startswith("rejected"):
                state.flagged = None
            return True
        reason = f"rejected its {purpose} (status {status})"
        if state.flagged != reason:
            log.warning("%s %s: its measured draw is reserved instead of its grant", ctx, reason)
        state.flagged = reason
        return False

    def _check_obedience(self, now: datetime) -> None:
        for cid, state in self.chargers.items():
            over = obeyed = False
            for tx in state.txs.values():
                if tx.sent_limit is None or tx.measured is None or tx.limit_since is None:
                    continue
                settled = now - tx.limit_since >= self.options.settle_time
                if max(tx.measured) <= tx.sent_limit + self.timing.tolerance:
                    tx.over_since = None
                    obeyed = obeyed or settled
                    continue
                # Right after a change the car may still be ramping down, unless it was
                # already over its limit before the change.
                if tx.over_since is None:
                    if not settled:
                        continue
                    tx.over_since = now
                if now - tx.over_since >= timedelta(seconds=self.timing.reaction_grace):
                    over = True
            if over and not state.flagged:
                state.flagged = "draws more than its limit"
                log.warning(
                    "site=%s charger=%s draws more than its limit: its measured draw "
                    "is reserved instead of its grant",
                    self.site_uid,
                    cid,
                )
            # Only a car seen obeying lifts the flag: a charger whose car left has shown nothing,
            # and the next car on it would draw its max before it could be found out again.
            elif obeyed and not over and state.flagged == "draws more than its limit":
                state.flagged = None

    def _record(self, a: Allocation) -> None:
        self.series.append(
            Sample(
                at=a.at,
                nodes=tuple(
                    {
                        "id": n.node_id,
                        "limit": n.limit,
                        "load": list(n.load),
                        "charger_load": list(n.charger_load),
                        "non_charger_load": list(n.non_charger_load),
                        "headroom": list(n.headroom),
                    }
                    for n in a.nodes
                ),
                connectors=tuple(
                    {
                        "charger_id": g.charger_id,
                        "connector_id": g.connector_id,
                        "granted": g.limit_to_send,
                        "per_phase": list(g.per_phase),
                        "reserved": g.reserved,
                    }
                    for g in a.connectors
                ),
            )
        )
