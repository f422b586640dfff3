"""One relayed charger: its WebSocket, its CPMS link and the session between them.

`ChargerLink` is the asyncio adapter around the sans-I/O `ChargerSession`: it reads both
sockets, feeds the session, carries out the effects, keeps the CPMS link up with backoff, and
offers `call()` so that HARMON-E (load management) can send its own calls to the charger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from harmone.clock import Clock
from harmone.config import RelayConfig
from harmone.errors import (
    CallErrorReceived,
    CallTimeout,
    ChargerNotConnected,
    StoreError,
    UpstreamUnavailable,
)
from harmone.ocpp.framing import call_error_frame, parse_envelope
from harmone.ocpp.session import (
    ChargerSession,
    CloseCharger,
    Effect,
    Journal,
    Note,
    Observe,
    OwnCallResult,
    ToCharger,
    ToCpms,
    TxMapEnded,
)
from harmone.ocpp.versions import error_code
from harmone.relay.backoff import Backoff
from harmone.relay.offline import OfflineJournal
from harmone.relay.state import FrameRecord, LiveCharger, Party
from harmone.relay.upstream import UpstreamRefused, cpms_endpoint

if TYPE_CHECKING:
    from harmone.relay.hub import RelayHub

__all__ = ["ChargerLink"]

log = logging.getLogger(__name__)

AsgiSend = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class ChargerLink:
    def __init__(
        self,
        hub: RelayHub,
        live: LiveCharger,
        session: ChargerSession,
        send_charger: AsgiSend,
        *,
        subprotocol: str,
        cpms_url: str | None,
        authorization: str | None,
        upstream: ClientConnection | None,
        pending_dial: asyncio.Task[ClientConnection] | None,
        config: RelayConfig,
        clock: Clock,
        journal: OfflineJournal | None = None,
        strict: bool = False,
    ) -> None:
        self.hub = hub
        #: hold mode: what the charger says while its CPMS link is down, to replay later
        self.journal = journal
        #: strict mode: the charger is closed when its CPMS link is lost
        self.strict = strict
        self.live = live
        self.session = session
        self.subprotocol = subprotocol
        self.cpms_url = cpms_url
        self._send_charger_raw = send_charger
        self._authorization = authorization
        self._upstream = upstream
        self._pending_dial = pending_dial
        self._config = config
        self._clock = clock
        self._ctx = f"site={live.site_uid} charger={live.id}"
        self._own_waiters: dict[str, asyncio.Future[Any]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._upstream_task: asyncio.Task[None] | None = None
        self._closing = False
        self._charger_open = True
        self.closed = asyncio.Event()

    # -- public --
    async def run(self, receive: AsgiReceive) -> None:
        """Relay until the charger leaves or is closed; then tear everything down."""
        if self.cpms_url is not None:
            self._upstream_task = asyncio.create_task(self._upstream_loop())
        close_code: int | None = None
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    text = message.get("text")
                    if text is None:
                        await self.close(1003, "OCPP-J frames must be text frames")
                        continue
                    await self._from_charger(text)
                elif kind == "websocket.disconnect":
                    close_code = message.get("code")
                    break
        finally:
            self._charger_open = False
            await self._teardown(close_code)

    async def call(self, action: str, payload: Any, timeout: float | None = None) -> Any:
        """Send a call of HARMON-E's own to the charger and return the answer's payload.

        Waits for the one-CALL-in-flight slot; the answer never reaches the CPMS. Raises
        CallTimeout, CallErrorReceived or ChargerNotConnected.
        """
        if self._closing:
            raise ChargerNotConnected(f"charger {self.live.id} is disconnecting")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        msg_id, effects = self.session.own_call(action, payload, self._clock.monotonic())
        self._own_waiters[msg_id] = fut
        try:
            await self._apply(effects)
            limit = timeout if timeout is not None else 2 * self._config.call_timeout
            return await asyncio.wait_for(fut, limit)
        except TimeoutError:
            await self._apply(self.session.cancel_own(msg_id, self._clock.monotonic()))
            raise CallTimeout(f"{action} to {self.live.id}: no answer in time") from None
        finally:
            self._own_waiters.pop(msg_id, None)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the charger's WebSocket (the read loop then tears the link down)."""
        if not self._charger_open:
            return
        self._charger_open = False
        log.info("%s closing charger connection: %s (%s)", self._ctx, reason or "-", code)
        try:
            await self._send_charger_raw(
                {"type": "websocket.close", "code": code, "reason": reason[:120]}
            )
        except Exception:  # the socket may already be gone; teardown follows either way
            log.debug("%s close on a dead socket", self._ctx)

    # -- charger side --
    async def _from_charger(self, text: str) -> None:
        self.live.last_seen = self._clock.now()
        effects = self.session.from_charger(text, self._clock.monotonic())
        forwarded = bool(effects) and type(effects[0]) is ToCpms
        self._record("charger", "cpms" if forwarded else "harmone", text)
        self.hub.seen(self.live)
        await self._apply(effects)

    async def _send_charger(self, text: str) -> None:
        if not self._charger_open:
            return
        try:
            await self._send_charger_raw({"type": "websocket.send", "text": text})
        except Exception as exc:  # uvicorn raises its own ClientDisconnected/OSError types
            log.info("%s charger socket gone while sending: %s", self._ctx, exc)
            self._charger_open = False

    # -- effects --
    async def _apply(self, effects: list[Effect]) -> None:
        unjournaled = False
        for effect in effects:
            kind = type(effect)
            if kind is ToCpms:
                assert isinstance(effect, ToCpms)
                await self._send_upstream(effect.text)
            elif kind is ToCharger:
                assert isinstance(effect, ToCharger)
                if unjournaled:
                    # the journal could not store the call: make the charger retry it later
                    # rather than tell it the message was taken care of
                    unjournaled = False
                    msg_id = parse_envelope(effect.text).id
                    await self._send_charger(
                        call_error_frame(
                            msg_id,
                            error_code(self.session.version, "internal"),
                            "HARMON-E could not store this message; send it again later",
                        )
                    )
                    continue
                if effect.origin == "harmone":
                    self._record("harmone", "charger", effect.text)
                await self._send_charger(effect.text)
            elif kind is Journal:
                assert isinstance(effect, Journal)
                # the local answer to this call is the next ToCharger of the same list
                unjournaled = not await self._journal_write(effect)
            elif kind is TxMapEnded:
                assert isinstance(effect, TxMapEnded)
                if self.journal is not None:
                    await self.journal.end_mapping(effect.local_id)
            elif kind is Observe:
                assert isinstance(effect, Observe)
                self.hub.observe(self.live, effect)
            elif kind is OwnCallResult:
                assert isinstance(effect, OwnCallResult)
                self._resolve_own(effect)
            elif kind is Note:
                assert isinstance(effect, Note)
                log.log(effect.level, "%s %s", self._ctx, effect.message)
            elif kind is CloseCharger:
                assert isinstance(effect, CloseCharger)
                log.warning("%s %s", self._ctx, effect.reason)
                await self.close(effect.code, effect.reason)
        self._arm_timer()

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
        fut = self._own_waiters.get(result.id)
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

    def _record(self, sender: Party, receiver: Party, text: str) -> None:
        self.live.frames.append(FrameRecord(time.time(), sender, receiver, text))

    # -- call timeouts --
    def _arm_timer(self) -> None:
        deadline = self.session.next_deadline()
        if deadline == self._timer_deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None and not self._closing:
            delay = max(0.0, deadline - self._clock.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        effects = self.session.tick(self._clock.monotonic())
        self._spawn(self._apply(effects))

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def runner() -> None:
            await coro

        task = asyncio.create_task(runner())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- CPMS side --
    async def _send_upstream(self, text: str) -> None:
        ws = self._upstream
        if ws is None:
            log.warning("%s CPMS link not open; frame not delivered", self._ctx)
            return
        try:
            await ws.send(text)
        except ConnectionClosed:
            # The upstream loop sees the close too and answers the charger's pending calls.
            log.info("%s CPMS link closed while sending", self._ctx)

    async def _upstream_loop(self) -> None:
        assert self.cpms_url is not None
        backoff = Backoff(
            self._config.backoff_initial, self._config.backoff_max, self._config.backoff_jitter
        )
        url = cpms_endpoint(self.cpms_url, self.live.id)
        while not self._closing:
            ws = self._upstream
            if ws is None:
                try:
                    ws = await self._connect(url)
                except (UpstreamRefused, UpstreamUnavailable) as exc:
                    self._set_upstream_error(str(exc))
                    await asyncio.sleep(backoff.next_delay())
                    continue
                if ws.subprotocol is not None and ws.subprotocol != self.subprotocol:
                    await ws.close(1000, "subprotocol mismatch")
                    await self.close(
                        1012,
                        f"CPMS speaks {ws.subprotocol}; reconnect to renegotiate the OCPP version",
                    )
                    return
                self._upstream = ws
            backoff.reset()
            if self.journal is not None and self.journal.pending:
                self._set_upstream_error(
                    f"replaying {self.journal.pending} journaled message(s) to the CPMS"
                )
                replayed = await self.journal.replay(
                    ws,
                    self.session,
                    self._apply,
                    lambda text: self._record("harmone", "cpms", text),
                    self._config.call_timeout,
                )
                if not replayed:
                    self._upstream = None
                    await ws.close(1011, "replay failed")
                    await asyncio.sleep(backoff.next_delay())
                    continue
            await self._upstream_up()
            try:
                async for message in ws:
                    if isinstance(message, bytes):
                        log.warning(
                            "%s binary frame from the CPMS dropped (OCPP-J is text)", self._ctx
                        )
                        continue
                    self._record("cpms", "charger", message)
                    await self._apply(self.session.from_cpms(message, self._clock.monotonic()))
            except ConnectionClosed:
                pass
            self._upstream = None
            if self._closing:
                return
            code = ws.close_code
            self._set_upstream_error(f"CPMS closed the connection (code {code})")
            if self.strict:
                await self.close(1012, "CPMS connection lost")
                return
            await self._apply(self.session.set_upstream(False))
            await asyncio.sleep(backoff.next_delay())

    async def _connect(self, url: str) -> ClientConnection:
        pending, self._pending_dial = self._pending_dial, None
        if pending is not None:
            return await pending
        # After the first handshake the charger is committed to one version: offer only it.
        return await self.hub.dial(
            url,
            [self.subprotocol],
            self._authorization,
            open_timeout=max(10.0, self._config.upstream_connect_timeout),
            max_size=self._config.max_frame_bytes,
            proxy=self._config.upstream_proxy,
            ca_file=self._config.upstream_ca,
        )

    async def _upstream_up(self) -> None:
        self.live.upstream_connected = True
        self.live.upstream_error = None
        self.hub.changed(self.live)
        log.info("%s CPMS link up (%s)", self._ctx, self.subprotocol)
        await self._apply(self.session.set_upstream(True))

    def _set_upstream_error(self, reason: str) -> None:
        was_up = self.live.upstream_connected
        self.live.upstream_connected = False
        if reason != self.live.upstream_error or was_up:
            log.warning("%s %s", self._ctx, reason)
        self.live.upstream_error = reason
        self.hub.changed(self.live)

    # -- teardown --
    async def _teardown(self, close_code: int | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        tasks: list[asyncio.Task[Any]] = [t for t in (self._upstream_task, self._pending_dial) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        if self._upstream is not None:
            await self._upstream.close(1000, "charger disconnected")
            self._upstream = None
        for fut in self._own_waiters.values():
            if not fut.done():
                fut.set_exception(ChargerNotConnected(f"charger {self.live.id} disconnected"))
        log.info("%s charger disconnected (code %s)", self._ctx, close_code)
        self.hub.detach(self)
        self.closed.set()
