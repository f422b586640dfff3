"""One relayed charger: its WebSocket, its CPMS link and the session between them.

`ChargerLink` is the asyncio adapter around the sans-I/O `ChargerSession`. Frames arrive as
callbacks from both sockets and are relayed synchronously, in the callback, without a task
or a queue per frame; only what must wait is asynchronous: a journal write before the local
answer it guards (frames from the charger are held meanwhile, in order), HARMON-E's own calls,
and keeping the CPMS link up (dial, replay, backoff) in one task that exists only while the
link is not up. It reports to a `LinkHost` (the registry) and reaches its CPMS through a
`Dialer`; it is built from value objects (`LinkServices`, `LinkSetup`), not from the
registry.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Any

from harmone.errors import (
    CallErrorReceived,
    CallTimeout,
    ChargerNotConnected,
    StoreError,
    UpstreamUnavailable,
)
from harmone.ocpp.refusals import not_stored
from harmone.ocpp.session import (
    ChargerSession,
    CloseCharger,
    CpmsSilent,
    Effect,
    Journal,
    Note,
    Observe,
    OwnCallResult,
    ToCharger,
    ToCpms,
    ToSecondary,
    TxMapEnded,
)
from harmone.relay.backoff import Backoff
from harmone.relay.dialer import DialRequest
from harmone.relay.link_setup import LinkServices, LinkSetup
from harmone.relay.offline import OfflineJournal
from harmone.relay.secondary import SecondaryLink
from harmone.relay.state import (
    CHARGER_TO_CPMS,
    CHARGER_TO_HARMONE,
    CPMS_TO_CHARGER,
    LiveCharger,
)
from harmone.relay.upstream import CpmsConnection, UpstreamRefused, cpms_endpoint
from harmone.relay.websocket import TextSocket

__all__ = ["ChargerLink", "LinkServices", "LinkSetup"]

log = logging.getLogger(__name__)


class ChargerLink:
    """See the module docstring; `start()` begins relaying."""

    def __init__(
        self,
        services: LinkServices,
        setup: LinkSetup,
        live: LiveCharger,
        session: ChargerSession,
        charger: TextSocket,
        journal: OfflineJournal | None = None,
    ) -> None:
        self._services = services
        self._host = services.host
        #: not empty while someone watches frames go by (kept: read at every frame)
        self._watchers = services.host.frame_watchers
        self._config = services.config
        self._clock = services.clock
        self._monotonic = services.clock.monotonic
        self.setup = setup
        self.live = live
        self.session = session
        #: hold mode: what the charger says while its CPMS link is down, to replay later
        self.journal = journal
        #: strict offline mode (the site's setting can change while connected)
        self.strict = setup.strict
        self._charger = charger
        self._cpms: TextSocket | None = None
        self._ctx = f"site={live.site_uid} charger={live.id}"
        #: the site's frame counters, looked up once: the relay path only adds to them
        self._traffic = traffic = services.metrics.site(live.site_uid)
        session.answer_time = traffic.cpms_latency.observe
        #: epoch seconds minus monotonic seconds: frame times without a datetime per frame
        #: (refreshed by the keep-alive sweep, so that clock adjustments catch up)
        self._epoch = self._clock.now().timestamp() - self._clock.monotonic()
        self._own_waiters: dict[str, asyncio.Future[Any]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._tasks: set[asyncio.Task[Any]] | None = None
        self._upstream_task: asyncio.Task[None] | None = None
        self._backoff: Backoff | None = None
        #: frames from the charger held while an earlier one waits for its journal write
        self._held: deque[str] | None = None
        self._pending_dial: asyncio.Task[CpmsConnection] | None = None
        self._closing = False
        self._closed: asyncio.Event | None = None
        #: the site's rule for the secondary's calls (may change while connected)
        self.secondary_rule = setup.secondary_rule
        session.mirror = setup.secondary_url is not None
        self._secondary = SecondaryLink(self, services) if session.mirror else None

    # -- what the registry and the other layers use --
    @property
    def closed(self) -> asyncio.Event:
        """Set once the link is torn down (made when first asked for: most links are never
        waited for, and an Event costs most of a kilobyte)."""
        if self._closed is None:
            self._closed = asyncio.Event()
            if self._closing:  # the teardown is synchronous: it is over
                self._closed.set()
        return self._closed

    @property
    def cpms_url(self) -> str | None:
        return self.setup.cpms_url

    @property
    def secondary_url(self) -> str | None:
        return self.setup.secondary_url

    @property
    def subprotocol(self) -> str:
        return self.setup.subprotocol

    def start(
        self,
        upstream: CpmsConnection | None,
        pending: asyncio.Task[CpmsConnection] | None,
    ) -> None:
        """Relay from now on; `upstream` is the CPMS connection opened at the handshake, or
        `pending` the dial still under way (neither: dial when the link is up)."""
        self._pending_dial = pending
        if self._secondary is not None:
            self._secondary.start()
        if self.setup.cpms_url is None:
            self._charger.attach(self)
            return
        if upstream is None:
            self._charger.attach(self)
            if not self._closing:
                self._upstream_task = self._spawn(self._connect_upstream(pending))
            return
        # Before the charger's first frame: it goes to the CPMS, not into a void.
        self._adopt(upstream.sock)
        self._charger.attach(self)
        if self._closing:
            return
        if self.journal is not None and self.journal.pending:
            self._upstream_task = self._spawn(self._replay_first(upstream.sock))
        elif self._cpms is upstream.sock:
            self._upstream_up()

    async def call(self, action: str, payload: Any, timeout: float | None = None) -> Any:
        """Send a call of HARMON-E's own to the charger and return the answer's payload.

        Waits for the one-CALL-in-flight slot; the answer never reaches the CPMS. Raises
        CallTimeout, CallErrorReceived or ChargerNotConnected.
        """
        if self._closing:
            raise ChargerNotConnected(f"charger {self.live.id} is disconnecting")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        msg_id, effects = self.session.own_call(action, payload, self._clock.monotonic())
        if self._own_waiters is None:
            self._own_waiters = {}
        self._own_waiters[msg_id] = fut
        try:
            self._apply(effects)
            limit = timeout if timeout is not None else 2 * self._config.call_timeout
            return await asyncio.wait_for(fut, limit)
        except TimeoutError:
            self._apply(self.session.cancel_own(msg_id, self._clock.monotonic()))
            raise CallTimeout(f"{action} to {self.live.id}: no answer in time") from None
        finally:
            if self._own_waiters is not None:
                self._own_waiters.pop(msg_id, None)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the charger's WebSocket (its disconnection then tears the link down)."""
        self.close_now(code, reason)

    def close_now(self, code: int = 1000, reason: str = "") -> None:
        """`close`, from a callback."""
        if self._charger.closed or self._closing:
            return
        log.info("%s closing charger connection: %s (%s)", self._ctx, reason or "-", code)
        self._charger.close(code, reason[:120])

    def watch(self, actions: frozenset[str]) -> None:
        self.session.watched = actions

    def keepalive(self, now: float, interval: float, timeout: float) -> None:
        """Ping a side that has been quiet for `interval`; drop one whose ping went
        unanswered for `timeout` (a peer that vanished without closing)."""
        self._epoch = self._clock.now().timestamp() - now
        for sock in (self._charger, self._cpms):
            if sock is None or sock.closed:
                continue
            quiet = sock.quiet_for(now)
            if sock.ping_sent_at is not None:
                if now - sock.ping_sent_at >= timeout:
                    side = "charger" if sock is self._charger else "CPMS"
                    log.warning("%s %s did not answer a ping in %g s", self._ctx, side, timeout)
                    sock.abort()
            elif quiet >= interval:
                sock.ping(now)
        if self._secondary is not None:
            self._secondary.keepalive(now, interval, timeout)

    # -- socket callbacks (SocketSink) --
    def on_text(self, sock: TextSocket, text: str) -> None:
        if sock is self._charger:
            if self._held is not None:
                self._held.append(text)
            else:
                self._from_charger(text)
        elif sock is self._cpms:
            self._from_cpms(text)

    def on_binary(self, sock: TextSocket) -> None:
        if sock is self._charger:
            self.close_now(1003, "OCPP-J frames must be text frames")
        elif sock is self._cpms:
            log.warning("%s binary frame from the CPMS dropped (OCPP-J is text)", self._ctx)

    def on_closed(self, sock: TextSocket) -> None:
        if sock is self._charger:
            self._teardown()
        elif sock is self._cpms:
            self._lose_cpms()

    def on_write_paused(self, sock: TextSocket, paused: bool) -> None:
        # A side that cannot take more makes the other side wait, as a proxy does.
        other = self._cpms if sock is self._charger else self._charger
        if other is not None:
            other.pause_reading(paused)

    # -- frames --
    def _from_charger(self, text: str) -> None:
        mono = self._monotonic()
        live = self.live
        at = live.seen_at = mono + self._epoch
        effects = self.session.from_charger(text, mono)
        first = effects[0] if effects else None
        if type(first) is ToCpms:
            live.frames.add(at, CHARGER_TO_CPMS, text)
            if self._watchers:
                self._host.seen(live)
            if len(effects) == 1:
                # the usual frame: relayed as it came, nothing else to do
                self._send_cpms(first.text)
                if self._timer is None:
                    self._arm_timer()
                return
        else:
            self._traffic.charger_to_harmone += 1
            live.frames.add(at, CHARGER_TO_HARMONE, text)
            if self._watchers:
                self._host.seen(live)
        self._apply(effects)

    def _from_cpms(self, text: str) -> None:
        journal = self.journal
        mono = self._monotonic()
        self.live.frames.add(mono + self._epoch, CPMS_TO_CHARGER, text)
        if journal is not None and journal.replaying and journal.take_answer(text):
            return  # the answer to a replayed call is HARMON-E's alone
        effects = self.session.from_cpms(text, mono)
        if len(effects) == 1:
            first = effects[0]
            if type(first) is ToCharger:
                # the usual frame: relayed as it came, nothing else to do
                self._send_charger(first)
                if self._timer is None:
                    self._arm_timer()
                return
        self._apply(effects)

    # -- effects --
    def _apply(self, effects: list[Effect]) -> None:
        """Carry out effects; from a journal write on, the rest continue in a task."""
        for i, effect in enumerate(effects):
            # isinstance, not `type(...) is`: mypy narrows it, and no assert runs per frame
            if isinstance(effect, ToCpms):
                self._send_cpms(effect.text)
            elif isinstance(effect, ToCharger):
                self._send_charger(effect)
            elif isinstance(effect, Observe):
                self._host.observe(self.live, effect)
            elif isinstance(effect, Journal) and self.journal is not None:
                if self._held is None:
                    self._held = deque()
                self._spawn(self._apply_after_journal(effects[i:]))
                break
            else:
                self._apply_other(effect)
        self._arm_timer()

    apply = _apply  # (for the secondary's calls)

    async def _apply_after_journal(self, effects: list[Effect]) -> None:
        try:
            await self._apply_async(effects)
        finally:
            held, self._held = self._held, None
            while held and not self._closing:
                self._from_charger(held.popleft())
                if self._held is not None:  # another write: it takes the rest along
                    self._held.extend(held)
                    break

    async def _apply_async(self, effects: list[Effect]) -> None:
        """Like `_apply`, awaiting each journal write before the answer it guards."""
        unjournaled = False
        for effect in effects:
            kind = type(effect)
            if kind is Journal:
                assert isinstance(effect, Journal)
                # the local answer to this call is the next ToCharger of the same list
                unjournaled = not await self._journal_write(effect)
            elif kind is ToCharger and unjournaled:
                assert isinstance(effect, ToCharger)
                unjournaled = False  # (the journal could not store the call)
                self._send_charger(not_stored(self.session.version, effect.text))
            elif kind is ToCharger or kind is ToCpms or kind is Observe or kind is ToSecondary:
                self._apply([effect])
            else:
                self._apply_other(effect)
        self._arm_timer()

    def _apply_other(self, effect: Effect) -> None:
        kind = type(effect)
        if kind is ToSecondary:
            assert isinstance(effect, ToSecondary)
            if self._secondary is not None:
                self._secondary.send(effect.text)
        elif kind is Note:
            assert isinstance(effect, Note)
            log.log(effect.level, "%s %s", self._ctx, effect.message)
        elif kind is OwnCallResult:
            assert isinstance(effect, OwnCallResult)
            self._resolve_own(effect)
        elif kind is TxMapEnded:
            assert isinstance(effect, TxMapEnded)
            if self.journal is not None:
                self._spawn(self.journal.end_mapping(effect.local_id))
        elif kind is CloseCharger:
            assert isinstance(effect, CloseCharger)
            log.warning("%s %s", self._ctx, effect.reason)
            self.close_now(effect.code, effect.reason)
        elif kind is CpmsSilent:
            self._cpms_silent()

    def _send_charger(self, effect: ToCharger) -> None:
        if effect.origin == "harmone":
            self.live.frames.append(
                self._monotonic() + self._epoch, "harmone", "charger", effect.text
            )
        if self._secondary is not None:
            self._secondary.charger_answered(effect.text)
        if self._charger.send_text(effect.text):
            if effect.origin == "harmone":
                self._traffic.harmone_to_charger += 1
            else:
                self._traffic.cpms_to_charger += 1
        elif not self._closing:
            log.info("%s charger socket gone while sending", self._ctx)

    def _send_cpms(self, text: str) -> None:
        sock = self._cpms
        if sock is not None and sock.send_text(text):
            self._traffic.charger_to_cpms += 1
        else:
            # The link's loss is handled where it is seen; the session answers locally.
            log.warning("%s CPMS link not open; frame not delivered", self._ctx)

    async def _journal_write(self, entry: Journal) -> bool:
        """Make a journal entry durable; False if the database refused it."""
        if self.journal is None:
            return True
        try:
            await self.journal.write(entry)
            return True
        except StoreError:
            log.exception(
                "%s could not journal %s; the charger is asked to resend it",
                self._ctx,
                entry.action,
            )
            return False

    def _resolve_own(self, result: OwnCallResult) -> None:
        fut = self._own_waiters.get(result.id) if self._own_waiters else None
        if fut is None or fut.done():
            return
        if result.timed_out:
            fut.set_exception(CallTimeout(f"charger {self.live.id} did not answer {result.id}"))
        elif result.error is not None:
            err = result.error
            fut.set_exception(
                CallErrorReceived(err.description, code=err.code, details=err.details)
            )
        else:
            fut.set_result(result.payload)

    # -- call timeouts --
    def _arm_timer(self) -> None:
        # One timer, set for the earliest deadline. Every deadline is "now + the call
        # timeout", so a later one is never earlier than a timer already set: that timer is
        # kept, and when it fires `tick` finds nothing due or something due, and the timer is
        # set again for what is left (once a call timeout, not once a frame).
        if self._timer is not None:
            return
        deadline = self.session.next_deadline()
        if deadline is None or self._closing:
            return
        self._timer_deadline = deadline
        delay = max(0.0, deadline - self._clock.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        self._apply(self.session.tick(self._clock.monotonic()))

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        async def runner() -> Any:
            return await coro

        task = asyncio.create_task(runner())
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- CPMS side --
    def _adopt(self, sock: TextSocket) -> None:
        """Make `sock` this link's CPMS connection."""
        self._cpms = sock
        sock.attach(self)

    async def _connect_upstream(self, pending: asyncio.Task[CpmsConnection] | None) -> None:
        """Bring the CPMS link up: dial with backoff (or finish the handshake's dial), replay
        the journal, then return; the link stays up without a task until it is lost."""
        cfg = self._config
        assert self.setup.cpms_url is not None
        # After the first handshake the charger is committed to one version: offer only it.
        request = DialRequest(
            cpms_endpoint(self.setup.cpms_url, self.live.id),
            (self.subprotocol,),
            self.setup.authorization,
            self._ctx,
        )
        if self._backoff is None:
            self._backoff = Backoff(cfg.backoff_initial, cfg.backoff_max, cfg.backoff_jitter)
        backoff = self._backoff
        delay = 0.0 if pending is not None else backoff.next_delay()
        while not self._closing:
            if delay:
                await asyncio.sleep(delay)
            delay = backoff.next_delay()
            try:
                conn = await (pending or self._services.dialer.dial(request))
            except (UpstreamRefused, UpstreamUnavailable) as exc:
                self._set_upstream_error(str(exc))
                continue
            finally:
                pending = self._pending_dial = None
            if conn.subprotocol is not None and conn.subprotocol != self.subprotocol:
                conn.sock.close(1000, "subprotocol mismatch")
                self.close_now(
                    1012,
                    f"CPMS speaks {conn.subprotocol}; reconnect to renegotiate the OCPP version",
                )
                return
            if self._closing:
                conn.sock.close(1000, "charger disconnected")
                return
            self._adopt(conn.sock)
            if await self._replay(conn.sock):
                return

    async def _replay_first(self, sock: TextSocket) -> None:
        """The handshake's CPMS connection, when there is a journal to replay first."""
        if not await self._replay(sock) and not self._closing and not self.strict:
            await self._connect_upstream(None)

    async def _replay(self, sock: TextSocket) -> bool:
        """Replay the journal on a new CPMS connection, then declare the link up; False if
        the connection was lost or the replay failed (it is then closed)."""
        journal = self.journal
        if self._cpms is sock and journal is not None and journal.pending:
            self._set_upstream_error(
                f"replaying {journal.pending} journaled message(s) to the CPMS"
            )
            replayed = await journal.replay(
                sock.send_text, self.session, self._record_replayed, self._config.call_timeout
            )
            if not replayed:
                if self._cpms is sock:
                    self._cpms = None
                sock.close(1011, "replay failed")
                return False
        if self._cpms is not sock:
            return False
        self._upstream_up()
        return True

    def _record_replayed(self, text: str) -> None:
        self._traffic.harmone_to_cpms += 1
        self.live.frames.append(self._monotonic() + self._epoch, "harmone", "cpms", text)

    def _upstream_up(self) -> None:
        if self._backoff is not None:
            self._backoff.reset()
        self.live.upstream_connected = True
        self.live.upstream_error = None
        self._host.changed(self.live)
        log.info("%s CPMS link up (%s)", self._ctx, self.subprotocol)
        self._apply(self.session.set_upstream(True))

    def _lose_cpms(self, reason: str | None = None) -> None:
        """The CPMS connection is gone: answer what it left open, and redial (or, in strict
        mode, close the charger)."""
        sock, self._cpms = self._cpms, None
        if self.journal is not None:
            self.journal.link_lost()
        if self._closing:
            return
        if self.session.upstream_up:
            effects = self.session.set_upstream(False)
            if any(type(e) is Journal for e in effects):
                self._spawn(self._apply_async(effects))
            else:
                self._apply(effects)
        code = sock.close_code if sock is not None else None
        self._set_upstream_error(reason or f"CPMS closed the connection (code {code})")
        if self.strict:
            self.close_now(1012, "CPMS connection lost")
            return
        if self._upstream_task is None or self._upstream_task.done():
            self._upstream_task = self._spawn(self._connect_upstream(None))

    def _cpms_silent(self) -> None:
        """The CPMS left a call unanswered: the session answered locally; drop the link."""
        sock = self._cpms
        self._lose_cpms(
            f"CPMS accepted the connection but did not answer within "
            f"{self._config.call_timeout:g} s; reconnecting"
        )
        if sock is not None:
            sock.close(1011, "no answer in time")

    def _set_upstream_error(self, reason: str) -> None:
        was_up = self.live.upstream_connected
        self.live.upstream_connected = False
        if reason != self.live.upstream_error or was_up:
            log.warning("%s %s", self._ctx, reason)
        self.live.upstream_error = reason
        self._host.changed(self.live)

    # -- teardown --
    def _teardown(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks or ()):
            task.cancel()
        if self._pending_dial is not None:
            # cancelled with the task that awaits it, unless that task never got to run
            self._pending_dial.cancel()
            self._pending_dial = None
        cpms, self._cpms = self._cpms, None
        if cpms is not None:
            cpms.close(1000, "charger disconnected")
        if self._secondary is not None:
            self._secondary.close()
        for fut in (self._own_waiters or {}).values():
            if not fut.done():
                fut.set_exception(ChargerNotConnected(f"charger {self.live.id} disconnected"))
        log.info("%s charger disconnected (code %s)", self._ctx, self._charger.close_code)
        self._host.detached(self)
        if self._closed is not None:
            self._closed.set()
