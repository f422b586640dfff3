"""The thin loop that carries out load management for one site.

A round: `SiteLoadState.review` (what time alone changes), `allocate`, `make_plan`, and each call
of the plan handed to its own task, so that chargers are served concurrently and a slow or
silent one holds back nobody but itself. A call's outcome goes back into the state and wakes the
next round. Rounds run on every event (after a short debounce) and every `tick`. Every wait goes
through the injected `Timer`, so a `ManualClock` can drive hours of it in a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from harmone.clock import Timer
from harmone.errors import CallErrorReceived, CallTimeout, HarmoneError
from harmone.loadmgmt.allocate import allocate
from harmone.loadmgmt.config import SiteLoadConfig
from harmone.loadmgmt.history import MinuteHistory
from harmone.loadmgmt.model import Allocation, AllocationOptions
from harmone.loadmgmt.plan import Plan, ProfileCall, make_plan
from harmone.loadmgmt.state import SiteLoadState, Timing
from harmone.metrics import SiteLoadCounters
from harmone.ocpp.events import ChargingProfile, parse_charging_profile
from harmone.ocpp.versions import OcppVersion

__all__ = ["Sample", "SendProfile", "SentCall", "SiteController", "Timing"]

log = logging.getLogger(__name__)

#: (charger_id, payload) -> the charger's answer payload; raises HarmoneError on failure.
SendProfile = Callable[[str, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of the site's time series."""

    at: datetime
    nodes: tuple[dict[str, Any], ...]
    connectors: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class SentCall:
    """A call as it left, with the clock's monotonic time (for tests and benchmarks)."""

    at: float
    call: ProfileCall


class SiteController:
    def __init__(
        self,
        site_uid: str,
        config: SiteLoadConfig,
        state: SiteLoadState,
        send: SendProfile,
        clock: Timer,
        options: AllocationOptions | None = None,
        timing: Timing | None = None,
        *,
        history: int = 720,
        persist: Callable[[], Awaitable[None]] | None = None,
        metrics: SiteLoadCounters | None = None,
    ) -> None:
        self.site_uid = site_uid
        #: rounds, their duration, profiles sent and how they were answered (/metrics)
        self.metrics = metrics or SiteLoadCounters()
        self.config = config
        self.state = state
        self.options = options or AllocationOptions()
        self.timing = timing or Timing()
        self.last: Allocation | None = None
        self.last_plan: Plan | None = None
        self.series: deque[Sample] = deque(maxlen=history)
        #: the same rounds summarised per minute, for a day (charts over hours)
        self.minutes = MinuteHistory()
        #: seconds from the event that woke a round to each profile it sent, and to decreases
        self.reaction_times: deque[float] = deque(maxlen=1000)
        self.decrease_times: deque[float] = deque(maxlen=1000)
        self.sent: deque[SentCall] = deque(maxlen=10_000)
        self._send = send
        self._clock = clock
        self._persist = persist
        self._wake = asyncio.Event()
        self._event_mono: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._workers: dict[str, asyncio.Task[None]] = {}

    # -- life ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"loadmgmt {self.site_uid}")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._workers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._workers.clear()

    def poke(self) -> None:
        """Something changed: run a round soon."""
        if self._event_mono is None:
            self._event_mono = self._clock.monotonic()
        self._wake.set()

    def reconfigure(self, config: SiteLoadConfig) -> None:
        self.config = config
        for ch in self.state.chargers.values():
            ch.defaults_fresh = set()
        self.poke()

    async def _run(self) -> None:
        while True:
            wake = asyncio.ensure_future(self._wake.wait())
            wait = self.timing.tick
            change = self.state.next_change(self.config, self._clock.now())
            if change is not None:
                # an apply wait ends or a profile's schedule moves: plan again right then
                until = (change - self._clock.now()).total_seconds() + self.timing.debounce
                wait = max(0.0, min(wait, until))
            try:
                await _within(wake, self._clock, wait)
            finally:
                wake.cancel()
            await self._clock.sleep(self.timing.debounce)  # a burst of events: one round
            self._wake.clear()
            try:
                self.round()
            except Exception:
                log.exception("site=%s load management round failed", self.site_uid)

    # -- one round -------------------------------------------------------------------------------
    def round(self) -> Plan | None:
        """Review, allocate, plan and dispatch once. Returns the plan (None if disabled)."""
        if not self.config.enabled:
            self._event_mono = None
            return None
        # wall time spent computing, not the injected clock's: what the metric is for
        started = time.perf_counter()
        metrics = self.metrics
        metrics.rounds += 1
        now = self._clock.now()
        for cid in self.state.review(self.config, self.timing, self.options, now):
            metrics.ignored += 1
            log.warning(
                "site=%s charger=%s draws more than its limit: its draw is reserved instead of "
                "its grant",
                self.site_uid,
                cid,
            )
        tree = self.state.tree(self.config)
        allocation: Allocation | None
        try:
            allocation = allocate(
                tree,
                self.state.demands(self.config, now),
                list(self.state.measurements.values()),
                now,
                self.config.policy,
                options=self.config.allocation_options(self.options),
            )
        except HarmoneError:
            log.exception(
                "site=%s allocation failed: pausing every managed connector", self.site_uid
            )
            allocation = None
            metrics.failed_rounds += 1
        if allocation is not None:
            self.last = allocation
            self._record(allocation)
        busy = frozenset(cid for cid, task in self._workers.items() if not task.done())
        plan = make_plan(
            self.state, self.config, tree, allocation, self.timing, self.options, now, busy
        )
        self.last_plan = plan
        metrics.round_seconds.observe(time.perf_counter() - started)
        event, self._event_mono = self._event_mono, None
        for call in plan.calls:
            self._dispatch(call, event, now)
        return plan

    def _dispatch(self, call: ProfileCall, event: float | None, now: datetime) -> None:
        tx_limit = call.limit if call.transaction_id is not None else None
        self.state.call_sent(call.charger_id, call.connector_id, tx_limit, now)
        mono = self._clock.monotonic()
        self.sent.append(SentCall(mono, call))
        self.metrics.sent += 1
        if event is not None:
            self.reaction_times.append(mono - event)
            if call.kind == "decrease":
                self.decrease_times.append(mono - event)
        self._workers[call.charger_id] = asyncio.create_task(
            self._carry_out(call), name=f"loadmgmt {self.site_uid} {call.charger_id}"
        )

    async def _carry_out(self, call: ProfileCall) -> None:
        cid = call.charger_id
        ctx = f"site={self.site_uid} charger={cid}"
        if call.kind == "increase" and self._persist is not None:
            # Written before it is sent: after a crash the increase is counted, never lost.
            try:
                await self._persist()
            except HarmoneError:
                log.exception("%s could not persist the load state before an increase", ctx)
        sending = asyncio.ensure_future(self._send(cid, call.payload))
        try:
            await self._await_answer(call, sending, ctx)
        finally:
            if not sending.done():  # stopped while waiting: the call goes with us
                sending.cancel()

    async def _await_answer(
        self, call: ProfileCall, sending: asyncio.Future[Any], ctx: str
    ) -> None:
        cid = call.charger_id
        timing = self.timing
        done = await _within(sending, self._clock, min(timing.answer_grace, timing.call_timeout))
        if not done:
            if self.state.call_late(cid, self._clock.now()):
                log.warning(
                    "%s has not answered its %s for %g s: counted at its max current until it "
                    "answers",
                    ctx,
                    call.purpose,
                    timing.answer_grace,
                )
                self.poke()
            rest = max(0.0, timing.call_timeout - timing.answer_grace)
            done = await _within(sending, self._clock, rest)
        if not done:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, HarmoneError):
                await sending
        self._outcome(call, sending, ctx)
        self.poke()

    def _outcome(self, call: ProfileCall, sending: asyncio.Future[Any], ctx: str) -> None:
        now = self._clock.now()
        cid, conn = call.charger_id, call.connector_id
        outcomes = self.metrics.outcomes
        if sending.cancelled():
            outcomes["unanswered"] += 1
            log.warning(
                "%s %s not answered within %g s", ctx, call.purpose, self.timing.call_timeout
            )
            self.state.call_failed(cid, conn, None, now)
            return
        exc = sending.exception()
        if isinstance(exc, CallErrorReceived):
            outcomes["rejected"] += 1
            reason = f"rejected its {call.purpose} (CallError {exc.code})"
            log.warning("%s %s: its draw is reserved instead of its grant", ctx, reason)
            self.state.call_failed(cid, conn, reason, now)
            return
        if isinstance(exc, HarmoneError):
            outcomes["unanswered" if isinstance(exc, CallTimeout) else "undelivered"] += 1
            log.warning("%s %s not delivered: %s", ctx, call.purpose, exc)
            self.state.call_failed(cid, conn, None, now)
            return
        if exc is not None:
            raise exc
        answer = sending.result()
        status = answer.get("status") if isinstance(answer, dict) else None
        tx = call.transaction_id
        if status != "Accepted" and tx is not None and not self.state.running(cid, conn, tx):
            # A charger rightly refuses a TxProfile for a transaction that has just ended.
            log.info(
                "%s refused a TxProfile for ended transaction %s: not held against it", ctx, tx
            )
            outcomes["moot"] += 1
            self.state.call_moot(cid, conn)
            return
        if status != "Accepted":
            outcomes["rejected"] += 1
            reason = f"rejected its {call.purpose} (status {status})"
            log.warning("%s %s: its draw is reserved instead of its grant", ctx, reason)
            self.state.call_failed(cid, conn, reason, now)
            return
        outcomes["accepted"] += 1
        ch = self.state.chargers.get(cid)
        profile = _profile_of(call, ch.version) if ch is not None else None
        self.state.call_accepted(
            cid,
            conn,
            call.transaction_id,
            call.limit,
            profile,
            self.config.settings_for(cid),
            self.timing,
            now,
        )

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
        self.minutes.add(self.series[-1])


async def _within(task: asyncio.Future[Any], clock: Timer, seconds: float) -> bool:
    """Wait for `task` at most `seconds` of `clock` time; True if it is done."""
    if task.done():
        return True
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({task, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
    return task.done()


def _profile_of(call: ProfileCall, version: OcppVersion) -> ChargingProfile | None:
    """The profile HARMON-E sent, as the value the stacking resolver will read."""
    v16 = version is OcppVersion.V16
    raw = call.payload.get("csChargingProfiles" if v16 else "chargingProfile")
    return None if raw is None else parse_charging_profile(raw, v16)
