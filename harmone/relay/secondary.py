"""A charger's second backend: a mirror of its calls, and calls of its own that a rule filters.

`SecondaryLink` belongs to one `ChargerLink` and keeps the secondary CPMS connection: it dials
with its own backoff, sends the frames the session gives it (`ToSecondary`: copies of the
charger's calls, byte-exact, and the charger's answers to the secondary's own calls), and reads
what the secondary sends. Nothing it does can hold up the charger or the primary CPMS:

* frames for the secondary wait in a queue bounded in frames and in characters while it is
  away or not reading (the oldest are dropped and counted when it is full); the charger's
  path never waits for it;
* its answers to the charger's calls are dropped (only the primary's reach the charger), except
  that a 1.6 StartTransaction answer gives its own transaction id, mapped per transaction:
  frames towards it carry its id, its calls reach the charger with the charger's;
* its calls go through the site's rule (`harmone.ocpp.secondary`): a refused one is answered
  with a CallError SecurityError and never reaches the charger; an allowed one waits for the
  one-CALL-in-flight slot (`ChargerSession.secondary_call`), its answer comes back here;
* a flood is answered with CallErrors beyond a token bucket, and the connection is closed
  (and dialled again after backoff) if it goes on; broken frames are logged and dropped.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import OrderedDict, deque
from typing import Any, Protocol

from harmone.clock import Clock
from harmone.config import RelayConfig
from harmone.errors import FrameError, UpstreamUnavailable
from harmone.ocpp.effects import Effect
from harmone.ocpp.framing import MessageType, call_error_frame, parse_envelope, swap_int_member
from harmone.ocpp.secondary import SecondaryRule, parse_rule
from harmone.ocpp.session import TX_ID_PATH, ChargerSession
from harmone.ocpp.versions import OcppVersion, error_code
from harmone.relay.backoff import Backoff
from harmone.relay.dialer import BoundedDialer, Dialer, DialRequest
from harmone.relay.host import LinkHost
from harmone.relay.state import LiveCharger
from harmone.relay.upstream import UpstreamRefused, cpms_endpoint
from harmone.relay.websocket import TextSocket

__all__ = ["SecondaryLink", "SecondaryOwner", "SecondaryServices"]

log = logging.getLogger(__name__)

_TX_TO_SECONDARY = frozenset({"MeterValues", "StopTransaction"})
_TX_TO_CHARGER = frozenset({"RemoteStopTransaction", "SetChargingProfile"})
#: StartTransaction calls whose two answers (the charger's and the secondary's) are awaited
_MAX_STARTS = 16
#: the process's dialer -> the one its secondaries use
_SECONDARY_DIALERS: weakref.WeakKeyDictionary[BoundedDialer, BoundedDialer] = (
    weakref.WeakKeyDictionary()
)


def _secondary_dialer(services: SecondaryServices) -> Dialer:
    """Secondary handshakes get a bound of their own: a secondary that hangs every handshake
    must not hold the slots the primaries need after a restart (a dialer given by a test or
    an embedder is used as it is)."""
    dialer = services.dialer
    if not isinstance(dialer, BoundedDialer):
        return dialer
    own = _SECONDARY_DIALERS.get(dialer)
    if own is None:
        own = _SECONDARY_DIALERS[dialer] = BoundedDialer(services.config, services.clock)
    return own


class SecondaryOwner(Protocol):
    """The charger's link, as far as its secondary uses it."""

    #: the site's rule (text form), read for every call of the secondary
    secondary_rule: str

    @property
    def secondary_url(self) -> str | None: ...

    @property
    def subprotocol(self) -> str: ...

    @property
    def live(self) -> LiveCharger: ...

    @property
    def session(self) -> ChargerSession: ...

    def apply(self, effects: list[Effect]) -> None:
        """Carry out the session's effects (as for the charger's own frames)."""
        ...


class SecondaryServices(Protocol):
    """What every link of the process shares (`LinkServices`)."""

    @property
    def host(self) -> LinkHost: ...

    @property
    def dialer(self) -> Dialer: ...

    @property
    def config(self) -> RelayConfig: ...

    @property
    def clock(self) -> Clock: ...


class SecondaryLink:
    """See the module docstring; `start()` begins dialling, `close()` ends it all."""

    def __init__(self, owner: SecondaryOwner, services: SecondaryServices) -> None:
        assert owner.secondary_url is not None
        self.url = owner.secondary_url
        self.live = live = owner.live
        self._owner = owner
        self._subprotocol = owner.subprotocol
        self._session = owner.session
        self._version = owner.session.version
        self._rule: tuple[str, SecondaryRule] = ("", parse_rule(None))
        self._host = services.host
        self._dialer = _secondary_dialer(services)
        self._config = config = services.config
        self._clock = clock = services.clock
        self._where = f"site={live.site_uid} charger={live.id}"
        self._ctx = f"{self._where} secondary"
        self._sock: TextSocket | None = None
        self._lost: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._queue: deque[str] = deque()
        self._queued_chars = 0
        self._paused = False
        self._closing = False
        self._dropping = False
        # 1.6 transaction ids: the charger's <-> the secondary's
        self._to_secondary: dict[int, int] = {}
        self._to_charger: dict[int, int] = {}
        #: StartTransaction id -> [the charger's transaction id, the secondary's]
        self._starts: OrderedDict[str, list[int | None]] = OrderedDict()
        self._tokens = float(config.secondary_call_burst)
        self._refill_at = clock.monotonic()
        self._flood_noted = False
        #: counters, for tests and the log
        self.refused = 0
        self.garbage = 0

    # -- life --
    def start(self) -> None:
        if not self._closing and self._task is None:
            self._task = asyncio.create_task(self._run())

    def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close(1000, "charger disconnected")
        self._queue.clear()
        self._queued_chars = 0
        # the live state outlives this link: the next connection may have no secondary
        self.live.secondary_connected = False
        self.live.secondary_error = None
        self.live.secondary_dropped = 0

    async def _run(self) -> None:
        cfg = self._config
        backoff = Backoff(cfg.backoff_initial, cfg.backoff_max, cfg.backoff_jitter)
        # The charger's credentials are for its primary CPMS: they are not given to another.
        request = DialRequest(
            cpms_endpoint(self.url, self.live.id), (self._subprotocol,), None, self._ctx
        )
        delay = 0.0
        while not self._closing:
            if delay:
                await asyncio.sleep(delay)
            delay = backoff.next_delay()
            try:
                conn = await self._dialer.dial(request)
            except (UpstreamRefused, UpstreamUnavailable) as exc:
                self._down(str(exc).replace("CPMS", "secondary CPMS", 1))
                continue
            if conn.subprotocol is not None and conn.subprotocol != self._subprotocol:
                conn.sock.close(1000, "subprotocol mismatch")
                self._down(f"secondary CPMS chose {conn.subprotocol}, not {self._subprotocol}")
                continue
            if self._closing:
                conn.sock.close(1000, "charger disconnected")
                return
            lost = self._lost = asyncio.Event()
            self._sock = conn.sock
            self._paused = False
            conn.sock.attach(self)  # (reports at once if it is already closed)
            if self._sock is conn.sock:
                backoff.reset()
                delay = backoff.next_delay()
                self._up()
            await lost.wait()

    def _up(self) -> None:
        self.live.secondary_connected = True
        self.live.secondary_error = None
        self._host.changed(self.live)
        log.info("%s link up (%d queued frame(s) to send)", self._ctx, len(self._queue))
        self._flush()

    def _down(self, reason: str) -> None:
        was_up = self.live.secondary_connected
        self.live.secondary_connected = False
        if reason != self.live.secondary_error or was_up:
            log.warning("%s %s", self._where, reason)  # (the reason names the secondary)
        self.live.secondary_error = reason
        self._host.changed(self.live)

    def keepalive(self, now: float, interval: float, timeout: float) -> None:
        sock = self._sock
        if sock is None or sock.closed:
            return
        quiet = sock.quiet_for(now)
        if sock.ping_sent_at is not None:
            if now - sock.ping_sent_at >= timeout:
                log.warning("%s did not answer a ping in %g s", self._ctx, timeout)
                sock.abort()
        elif quiet >= interval:
            sock.ping(now)

    # -- towards the secondary --
    def send(self, text: str) -> None:
        """A frame for the secondary: sent now, or queued (bounded) while it cannot take it."""
        if self._version is OcppVersion.V16 and '"StartTransaction"' in text:
            self._remember_start(text)
        sock = self._sock
        direct = sock is not None and not self._paused and not self._queue
        if direct and sock is not None and sock.send_text(self._outgoing(text)):
            return
        cfg = self._config
        self._queue.append(text)
        self._queued_chars += len(text)
        while len(self._queue) > cfg.secondary_queue or (
            self._queued_chars > cfg.secondary_queue_chars and len(self._queue) > 1
        ):
            self._queued_chars -= len(self._queue.popleft())
            self.live.secondary_dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "%s queue full (%d frames or %d characters): dropping the oldest until "
                    "it drains",
                    self._ctx,
                    cfg.secondary_queue,
                    cfg.secondary_queue_chars,
                )

    def _flush(self) -> None:
        sock = self._sock
        while self._queue and sock is not None and not self._paused:
            if not sock.send_text(self._outgoing(self._queue[0])):
                return
            self._queued_chars -= len(self._queue.popleft())
        if not self._queue and self._dropping:
            self._dropping = False
            log.info(
                "%s queue drained; %d frame(s) dropped so far",
                self._ctx,
                self.live.secondary_dropped,
            )

    def _outgoing(self, text: str) -> str:
        """`text` with the charger's 1.6 transaction id swapped for the secondary's."""
        if not self._to_secondary:
            return text
        for action in _TX_TO_SECONDARY:
            if f'"{action}"' in text:
                break
        else:
            return text
        try:
            env = parse_envelope(text)
        except FrameError:
            return text
        if env.type is not MessageType.CALL or env.action not in _TX_TO_SECONDARY:
            return text
        swapped = swap_int_member(text, TX_ID_PATH[env.action], self._to_secondary)
        if swapped is None:
            return text
        text, old = swapped
        if env.action == "StopTransaction":
            self._to_charger.pop(self._to_secondary.pop(old), None)
        return text

    def _remember_start(self, text: str) -> None:
        try:
            env = parse_envelope(text)
        except FrameError:
            return
        if env.type is MessageType.CALL and env.action == "StartTransaction":
            self._starts[env.id] = [None, None]
            while len(self._starts) > _MAX_STARTS:
                self._starts.popitem(last=False)

    def charger_answered(self, text: str) -> None:
        """A frame on its way to the charger: the answer to a StartTransaction gives the
        charger's transaction id (the primary's, or HARMON-E's when the primary is away)."""
        if self._starts:
            self._start_answer(text, 0)

    def _start_answer(self, text: str, side: int) -> None:
        try:
            env = parse_envelope(text)
        except FrameError:
            return
        pair = self._starts.get(env.id)
        if pair is None or env.type is not MessageType.CALLRESULT:
            return
        tx = self._session.started_transaction(text)
        if tx is None:
            del self._starts[env.id]
            return
        pair[side] = tx
        charger_tx, secondary_tx = pair
        if charger_tx is not None and secondary_tx is not None:
            del self._starts[env.id]
            if charger_tx != secondary_tx:
                self._to_secondary[charger_tx] = secondary_tx
                self._to_charger[secondary_tx] = charger_tx
                log.info(
                    "%s transaction %s is %s at the secondary", self._ctx, charger_tx, secondary_tx
                )

    # -- from the secondary (SocketSink) --
    def on_text(self, sock: TextSocket, text: str) -> None:
        if sock is not self._sock:
            return
        try:
            env = parse_envelope(text)
        except FrameError as exc:
            if not self._take_token():  # garbage counts as a call: it cannot flood either
                self._flooding(sock, None)
                return
            self.garbage += 1
            if self.garbage <= 3 or self.garbage % 100 == 0:
                log.warning(
                    "%s malformed frame dropped (%s; %d so far): %r",
                    self._ctx,
                    exc.description,
                    self.garbage,
                    text[:80],
                )
            return
        if env.type is MessageType.CALL:
            # Only its calls (and garbage) are rate-limited: its answers follow the charger's
            # calls, as many as the charger sends.
            if not self._take_token():
                self._flooding(sock, env.id)
                return
            assert env.action is not None
            self._call(env.id, env.action, text)
        elif env.type is MessageType.CALLRESULT and env.id in self._starts:
            self._start_answer(text, 1)
        # every other answer of the secondary is dropped: only the primary's reach the charger

    def _call(self, msg_id: str, action: str, text: str) -> None:
        rule_text = self._owner.secondary_rule
        if rule_text != self._rule[0]:
            self._rule = (rule_text, parse_rule(rule_text))
        if not self._rule[1].allows(self._version, action):
            self.refused += 1
            log.warning("%s %s (%s) refused by the rule %r", self._ctx, action, msg_id, rule_text)
            self._reply_error(msg_id, "security", f"{action} is not allowed for this backend")
            return
        if self._to_charger and action in _TX_TO_CHARGER:
            swapped = swap_int_member(text, TX_ID_PATH[action], self._to_charger)
            if swapped is not None:
                text = swapped[0]
        self._owner.apply(
            self._session.secondary_call(
                text,
                parse_envelope(text),
                self._clock.monotonic(),
                self._config.secondary_waiting_calls,
            )
        )

    def _reply_error(self, msg_id: str, kind: str, description: str) -> None:
        frame = call_error_frame(msg_id, error_code(self._version, kind), description)
        if self._sock is not None:
            self._sock.send_text(frame)

    def _take_token(self) -> bool:
        now = self._clock.monotonic()
        burst = float(self._config.secondary_call_burst)
        elapsed = max(0.0, now - self._refill_at)
        self._refill_at = now
        self._tokens = min(burst, self._tokens + elapsed * self._config.secondary_call_rate)
        self._tokens -= 1.0
        if self._tokens >= 0:
            self._flood_noted = False
            return True
        return False

    def _flooding(self, sock: TextSocket, call_id: str | None) -> None:
        if self._tokens < -10 * self._config.secondary_call_burst:
            log.warning("%s flooding: connection closed, dialled again after backoff", self._ctx)
            sock.close(1008, "flooding: message rate limit exceeded")
            self._tokens = 0.0
            return
        if not self._flood_noted:
            self._flood_noted = True
            log.warning(
                "%s sends more than %g calls/s; refused",
                self._ctx,
                self._config.secondary_call_rate,
            )
        if call_id is not None:
            self._reply_error(call_id, "generic", "rate limit exceeded: too many calls")

    def on_binary(self, sock: TextSocket) -> None:
        log.warning("%s binary frame dropped (OCPP-J is text)", self._ctx)

    def on_closed(self, sock: TextSocket) -> None:
        if sock is not self._sock:
            return
        self._sock = None
        if self._lost is not None:
            self._lost.set()
        if not self._closing:
            self._down(f"secondary CPMS closed the connection (code {sock.close_code})")

    def on_write_paused(self, sock: TextSocket, paused: bool) -> None:
        # A secondary that does not read gets a queue, never the charger's back-pressure.
        if sock is self._sock:
            self._paused = paused
            if not paused:
                self._flush()

    def __repr__(self) -> str:
        state: Any = "up" if self._sock is not None else "down"
        return f"<SecondaryLink {self._ctx} {state} queued={len(self._queue)}>"
