"""The sans-I/O core of one relayed charger: who may send what to whom, and when.

`ChargerSession` is fed the text of each frame (`from_charger`, `from_cpms`), the calls
HARMON-E itself wants to make (`own_call`) and the passing of time (`tick`), and answers with a
list of effects for the I/O adapter to carry out. It never touches a socket or a clock, so every
rule below is tested with plain strings.

Rules it enforces (see docs/relay.md):

* Frames are forwarded as the exact text received; only the envelope is parsed.
* At most one CALL is in flight towards the charger. A CALL from the CPMS waits while one of
  HARMON-E's own calls is outstanding, and the other way round; the slot is freed by the answer
  or by the call timeout.
* Answers to HARMON-E's own calls are consumed here and never reach the CPMS. Own calls carry
  ids that are checked against the ids the CPMS has in use, so they cannot collide.
* While the CPMS link is down, the charger's calls are answered locally (standalone responder);
  frames that cannot be delivered are reported, never dropped silently.
* A charger call the CPMS leaves unanswered for the call timeout makes the CPMS count as away
  (`CpmsSilent`): the charger is answered locally, once, and the call is not sent again.
* Broken frames are not forwarded: the sender gets the protocol's CallError when it was a call.
* A charger that floods is answered with CallErrors beyond its budget, and closed if it goes on.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from harmone.errors import FrameError, OcppError
from harmone.ocpp.effects import (
    CloseCharger,
    CpmsSilent,
    Direction,
    Effect,
    Journal,
    Note,
    Observe,
    OwnCallResult,
    SessionLimits,
    ToCharger,
    ToCpms,
    ToSecondary,
    TxMapEnded,
)
from harmone.ocpp.events import WATCHED_ACTIONS, Event, interpret
from harmone.ocpp.framing import (
    Envelope,
    MessageType,
    call_error_frame,
    call_frame,
    call_result_frame,
    decode,
    parse_envelope,
    payload_of,
    swap_int_member,
)
from harmone.ocpp.refusals import broken_frame
from harmone.ocpp.versions import OcppVersion, error_code

__all__ = [
    "TX_ID_PATH",
    "ChargerSession",
    "CloseCharger",
    "CpmsSilent",
    "Effect",
    "Journal",
    "Note",
    "Observe",
    "OwnCallResult",
    "SessionLimits",
    "ToCharger",
    "ToCpms",
    "ToSecondary",
    "TxMapEnded",
]

LocalAnswer = Callable[[OcppVersion, str, Any], dict[str, Any]]

# The message types as module constants: reading `MessageType.CALL` goes through the enum's
# descriptor (about 150 ns on Python 3.11), and the session compares types at every frame.
_CALL, _CALLRESULT, _CALLERROR, _CALLRESULTERROR, _SEND = MessageType


@dataclass(slots=True)
class _Outgoing:
    owner: Literal["cpms", "own", "secondary"]
    id: str
    action: str
    text: str
    deadline: float = 0.0


#: 1.6 calls whose transactionId refers to the charger's (local) id and the CPMS's, and where
#: in their payload it is.
_TX_TO_CPMS = frozenset({"MeterValues", "StopTransaction"})
_TX_TO_CHARGER = frozenset({"RemoteStopTransaction", "SetChargingProfile"})
TX_ID_PATH: dict[str, tuple[str, ...]] = {
    "MeterValues": ("transactionId",),
    "StopTransaction": ("transactionId",),
    "RemoteStopTransaction": ("transactionId",),
    "SetChargingProfile": ("csChargingProfiles", "transactionId"),
}


#: Answers that can mean something (`events.interpret`): others are not decoded at all.
_MEANINGFUL_ANSWERS = frozenset(
    {"BootNotification", "StartTransaction", "SetChargingProfile", "ClearChargingProfile"}
)


def default_id_factory() -> str:
    # 35 characters: within OCPP-J's 36, and the "hm-" prefix makes HARMON-E's own calls
    # recognisable in captures. Uniqueness against the CPMS's ids is still checked explicitly.
    return "hm-" + uuid.uuid4().hex


class ChargerSession:
    """Relay state of one charger connection (see module docstring)."""

    def __init__(
        self,
        version: OcppVersion,
        *,
        local_answer: LocalAnswer,
        watched: frozenset[str] = WATCHED_ACTIONS,
        limits: SessionLimits | None = None,
        id_factory: Callable[[], str] = default_id_factory,
        upstream_up: bool = False,
        now: float = 0.0,
        journaled: frozenset[str] = frozenset(),
    ) -> None:
        self.version = version
        self.watched = watched
        #: Actions that, answered locally, must still reach the CPMS (see `Journal`).
        self.journaled = journaled
        #: 1.6 transactions started while the CPMS link was down: the id HARMON-E gave the
        #: charger -> the id the CPMS assigned on replay (and back), applied to later frames.
        self.tx_to_cpms: dict[int, int] = {}
        self.tx_to_charger: dict[int, int] = {}
        self.limits = limits or SessionLimits()
        self.upstream_up = upstream_up
        self._local_answer = local_answer
        self._new_id = id_factory
        self._inflight: _Outgoing | None = None
        # calls waiting for the slot, oldest first (a list: a deque costs 760 bytes empty, and
        # there is one session per charger)
        self._queue: list[_Outgoing] = []
        # charger->CPMS calls awaiting the CPMS's answer: id -> (action, text, deadline);
        # deadlines grow with insertion, so the first is the next to expire
        # (a plain dict: insertion-ordered, and cheaper per frame than an OrderedDict)
        self._charger_calls: dict[str, tuple[str, str, float]] = {}
        # own ids that timed out or were cancelled: their late answers are swallowed
        self._expired_own: OrderedDict[str, None] = OrderedDict()
        self._tokens = float(self.limits.flood_burst)
        self._last_refill = now
        self._flood_closed = False
        #: told the seconds the CPMS took to answer each of the charger's calls (metrics)
        self.answer_time: Callable[[float], None] | None = None
        #: a secondary CPMS is configured: the charger's calls are copied to it (ToSecondary)
        self.mirror = False

    # -- inspection --
    @property
    def busy(self) -> bool:
        """True while a CALL towards the charger awaits its answer."""
        return self._inflight is not None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def next_deadline(self) -> float | None:
        own = self._inflight.deadline if self._inflight else None
        if not self._charger_calls or not self.upstream_up:
            return own
        theirs = next(iter(self._charger_calls.values()))[2]
        return theirs if own is None else min(own, theirs)

    # -- charger -> HARMON-E --
    def from_charger(self, text: str, now: float) -> list[Effect]:
        try:
            env = parse_envelope(text)
        except FrameError as exc:
            return broken_frame(self.version, text, exc, "charger", ToCharger)
        kind = env.type
        if kind is _CALL and self.upstream_up and not self.mirror:
            # The usual frame, relayed as it is: the token bucket and the call's record inline
            # (this runs for every call of every charger).
            elapsed = now - self._last_refill
            self._last_refill = now
            if elapsed > 0.0:
                limits = self.limits
                tokens = self._tokens + elapsed * limits.flood_rate
                self._tokens = tokens if tokens < limits.flood_burst else float(limits.flood_burst)
            if self._tokens >= 1.0 and not self.tx_to_cpms:
                self._tokens -= 1.0
                action = env.action
                assert action is not None
                calls = self._charger_calls
                msg_id = env.id
                if msg_id in calls:
                    del calls[msg_id]  # a reused id expires from now, in order
                calls[msg_id] = (action, text, now + self.limits.call_timeout)
                if len(calls) > self.limits.remembered_calls:
                    del calls[next(iter(calls))]
                effects: list[Effect] = [ToCpms(text)]
                if action in self.watched:
                    self._observe(effects, "charger", env, action, text)
                return effects
        return self._from_charger(env, text, now)

    def _from_charger(self, env: Envelope, text: str, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if env.type in (_CALL, _SEND) and not self._take_token(now, effects):
            if env.type is _CALL and not self._flood_closed:
                effects.append(
                    ToCharger(
                        call_error_frame(
                            env.id,
                            error_code(self.version, "generic"),
                            "rate limit exceeded: too many messages per second",
                        )
                    )
                )
            return effects
        if self.mirror and env.type in (_CALL, _SEND):
            effects.append(ToSecondary(text))  # as received, whatever the primary's state
        if env.type is _CALL:
            assert env.action is not None
            if self.upstream_up:
                if self.tx_to_cpms and env.action in _TX_TO_CPMS:
                    text = self._rewrite_tx(text, env, self.tx_to_cpms, effects)
                self._remember_charger_call(env.id, env.action, text, now)
                effects.append(ToCpms(text))
                if env.action in self.watched:  # (checked here too: most frames are not)
                    self._observe(effects, "charger", env, env.action, text)
            else:
                effects.extend(self._answer_locally(env, text))
            return effects
        if env.type is _SEND:
            assert env.action is not None
            if self.upstream_up:
                effects.append(ToCpms(text))
            else:
                effects.append(
                    Note(
                        logging.WARNING,
                        f"CPMS link down: {env.action} SEND from the charger not delivered",
                    )
                )
            self._observe(effects, "charger", env, env.action, text)
            return effects
        return self._answer_from_charger(env, text, now)

    def _answer_from_charger(self, env: Envelope, text: str, now: float) -> list[Effect]:
        effects: list[Effect] = []
        slot = self._inflight
        if slot is not None and slot.id == env.id:
            self._inflight = None
            if slot.owner == "own":
                effects.append(self._own_result(slot, env, text))
            elif slot.owner == "secondary":
                effects.append(ToSecondary(text))
                self._observe(effects, "charger", env, slot.action, text, slot.text)
            else:
                self._forward_answer_to_cpms(slot.action, env, text, effects, slot.text)
            effects.extend(self._dispatch(now))
            return effects
        if env.id in self._expired_own:
            del self._expired_own[env.id]
            effects.append(
                Note(logging.INFO, f"late answer to HARMON-E's own call {env.id} dropped")
            )
            return effects
        # An answer to a CPMS call that already timed out here: still the CPMS's business.
        self._forward_answer_to_cpms(None, env, text, effects)
        return effects

    def _forward_answer_to_cpms(
        self,
        action: str | None,
        env: Envelope,
        text: str,
        effects: list[Effect],
        request_text: str | None = None,
    ) -> None:
        if self.upstream_up:
            effects.append(ToCpms(text))
        else:
            effects.append(
                Note(
                    logging.WARNING,
                    f"CPMS link down: the charger's answer to {action or env.id} not delivered",
                )
            )
        if action is not None:
            self._observe(effects, "charger", env, action, text, request_text)

    def _own_result(self, slot: _Outgoing, env: Envelope, text: str) -> OwnCallResult:
        try:
            frame = decode(text)
            payload = payload_of(frame, env)
        except FrameError as exc:
            return OwnCallResult(slot.id, error=exc)
        if env.type is _CALLRESULT:
            return OwnCallResult(slot.id, payload=payload)
        description = str(frame[3]) if len(frame) > 3 else ""
        return OwnCallResult(
            slot.id,
            error=OcppError(description, code=env.action or "GenericError", details=payload),
        )

    # -- CPMS -> HARMON-E --
    def from_cpms(self, text: str, now: float) -> list[Effect]:
        try:
            env = parse_envelope(text)
        except FrameError as exc:
            return broken_frame(self.version, text, exc, "CPMS", ToCpms)
        if env.type is _CALL:
            assert env.action is not None
            effects: list[Effect] = []
            if self.tx_to_charger and env.action in _TX_TO_CHARGER:
                text = self._rewrite_tx(text, env, self.tx_to_charger, effects)
            self._observe(effects, "cpms", env, env.action, text)
            self._queue.append(_Outgoing("cpms", env.id, env.action, text))
            effects.extend(self._dispatch(now))
            return effects
        if env.type is _SEND:
            return [ToCharger(text, "cpms")]
        # An answer to one of the charger's calls.
        known = self._charger_calls.pop(env.id, None)
        effects = [ToCharger(text, "cpms")]
        if known is not None:
            if self.answer_time is not None:
                # the entry holds the call's deadline, set when it was relayed
                self.answer_time(now - known[2] + self.limits.call_timeout)
            if known[0] in self.watched:
                self._observe(effects, "cpms", env, known[0], text, known[1])
        return effects

    def secondary_call(self, text: str, env: Envelope, now: float, waiting: int) -> list[Effect]:
        """A CALL from the secondary CPMS that its rule allows: it waits for the one slot like
        the CPMS's calls (its answer is `ToSecondary`); when `waiting` of its calls already
        wait, it is refused (a busy secondary must not crowd out the primary)."""
        assert env.action is not None
        if sum(q.owner == "secondary" for q in self._queue) >= waiting:
            error = error_code(self.version, "generic")
            busy = "too many calls waiting for the charger"
            return [ToSecondary(call_error_frame(env.id, error, busy))]
        effects: list[Effect] = []
        self._observe(effects, "cpms", env, env.action, text)
        self._queue.append(_Outgoing("secondary", env.id, env.action, text))
        effects.extend(self._dispatch(now))
        return effects

    # -- HARMON-E's own calls --
    def own_call(self, action: str, payload: Any, now: float) -> tuple[str, list[Effect]]:
        """Queue a call of HARMON-E's own towards the charger; returns its id and effects."""
        msg_id = self._new_id()
        while self._id_in_use(msg_id):
            msg_id = self._new_id()
        self._queue.append(_Outgoing("own", msg_id, action, call_frame(msg_id, action, payload)))
        return msg_id, self._dispatch(now)

    def cancel_own(self, msg_id: str, now: float) -> list[Effect]:
        """Forget an own call its caller gave up on. An in-flight one keeps the slot until
        it is answered or times out (the charger may still be working on it)."""
        for item in self._queue:
            if item.owner == "own" and item.id == msg_id:
                self._queue.remove(item)
                return []
        if self._inflight is not None and self._inflight.id == msg_id:
            self._expire(msg_id)
        return []

    def _id_in_use(self, msg_id: str) -> bool:
        if self._inflight is not None and self._inflight.id == msg_id:
            return True
        return any(q.id == msg_id for q in self._queue) or msg_id in self._expired_own

    # -- time and link --
    def tick(self, now: float) -> list[Effect]:
        """Free the slot of a call whose answer is overdue; give up on a CPMS that leaves a
        charger call unanswered for the call timeout."""
        effects: list[Effect] = []
        if self.upstream_up and self._charger_calls:
            msg_id, (action, _, deadline) = next(iter(self._charger_calls.items()))
            if now >= deadline:
                effects.append(
                    Note(
                        logging.WARNING,
                        f"CPMS did not answer {action} ({msg_id}) within "
                        f"{self.limits.call_timeout:g} s; treating it as away",
                    )
                )
                # Sent on a link that was up: the CPMS has it, so it is answered locally
                # but not journaled (never delivered twice).
                effects.extend(self.set_upstream(False, delivered=True))
                effects.append(CpmsSilent(action, msg_id))
        slot = self._inflight
        if slot is None or now < slot.deadline:
            return effects
        self._inflight = None
        if slot.owner == "own":
            self._expire(slot.id)
            effects.append(OwnCallResult(slot.id, timed_out=True))
        else:
            if slot.owner == "secondary":
                self._expire(slot.id)  # its late answer is dropped, not given to the CPMS
            effects.append(
                Note(
                    logging.WARNING,
                    f"charger did not answer the CPMS's {slot.action} ({slot.id}) within "
                    f"{self.limits.call_timeout:g} s; next call released",
                )
            )
        effects.extend(self._dispatch(now))
        return effects

    def set_upstream(self, up: bool, *, delivered: bool = False) -> list[Effect]:
        """The CPMS link went up or down. On loss, the charger's unanswered calls are
        answered locally so that it does not wait for answers that cannot come.

        `delivered`: those calls certainly reached the CPMS (it went silent rather than
        away), so they are not journaled for replay.
        """
        self.upstream_up = up
        if up:
            return []
        effects: list[Effect] = []
        pending = list(self._charger_calls.items())
        self._charger_calls.clear()
        for msg_id, (action, text, _) in pending:
            env = Envelope(_CALL, msg_id, action)
            if not delivered:
                effects.append(
                    Note(
                        logging.WARNING,
                        f"CPMS link lost before it answered {action} ({msg_id}); it may or "
                        "may not have been processed there; answering the charger locally",
                    )
                )
            effects.extend(self._answer_locally(env, text, journal=not delivered))
        return effects

    def started_transaction(self, answer: str) -> int | None:
        """The transactionId of a 1.6 StartTransaction answer (`answer` is the CPMS's answer
        to a replayed start). Read even when the idTag was not accepted: the charger's
        StopTransaction for it still needs the CPMS's id."""
        try:
            env = parse_envelope(answer)
            payload = payload_of(decode(answer), env)
        except FrameError:
            return None
        if env.type is not _CALLRESULT or not isinstance(payload, dict):
            return None
        value = payload.get("transactionId")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    # -- transaction ids (1.6 offline starts) --
    def map_transaction(self, local_id: int, cpms_id: int) -> None:
        self.tx_to_cpms[local_id] = cpms_id
        self.tx_to_charger[cpms_id] = local_id

    def _rewrite_tx(
        self, text: str, env: Envelope, mapping: dict[int, int], effects: list[Effect]
    ) -> str:
        """Swap a mapped transactionId in a 1.6 frame, in place: only its digits change, every
        other byte is the sender's."""
        assert env.action is not None
        swapped = swap_int_member(text, TX_ID_PATH[env.action], mapping)
        if swapped is None:
            return text
        text, old = swapped
        if env.action == "StopTransaction" and mapping is self.tx_to_cpms:
            # the transaction is over: its mapping is not needed any more
            self.tx_to_charger.pop(self.tx_to_cpms.pop(old), None)
            effects.append(TxMapEnded(old))
        return text

    # -- internals --
    def _dispatch(self, now: float) -> list[Effect]:
        if self._inflight is not None or not self._queue:
            return []
        item = self._queue.pop(0)
        item.deadline = now + self.limits.call_timeout
        self._inflight = item
        return [ToCharger(item.text, "harmone" if item.owner == "own" else item.owner)]

    def _expire(self, msg_id: str) -> None:
        self._expired_own[msg_id] = None
        while len(self._expired_own) > self.limits.remembered_calls:
            self._expired_own.popitem(last=False)

    def _remember_charger_call(self, msg_id: str, action: str, text: str, now: float) -> None:
        self._charger_calls.pop(msg_id, None)  # a reused id expires from now, in order
        self._charger_calls[msg_id] = (action, text, now + self.limits.call_timeout)
        while len(self._charger_calls) > self.limits.remembered_calls:
            del self._charger_calls[next(iter(self._charger_calls))]

    def _answer_locally(self, env: Envelope, text: str, journal: bool = True) -> list[Effect]:
        assert env.action is not None
        effects: list[Effect] = []
        events: tuple[Event, ...] = ()
        try:
            payload = payload_of(decode(text), env)
            events = self._meaning("charger", env.type, env.action, payload)
            response = self._local_answer(self.version, env.action, payload)
        except OcppError as exc:
            code = exc.code
            if isinstance(exc, FrameError):
                code = error_code(self.version, "format")
            effects.append(ToCharger(call_error_frame(env.id, code, exc.description, exc.details)))
            effects.append(
                Note(
                    logging.INFO,
                    f"{env.action} answered locally with CallError {code}: {exc.description}",
                )
            )
            if events:
                effects.append(Observe("charger", env.type, env.action, text, events))
            return effects
        answered = self._meaning("harmone", _CALLRESULT, env.action, response, payload)
        if journal and env.action in self.journaled:
            effects.append(Journal(env.action, text, response, events + answered))
        answer = call_result_frame(env.id, response)
        effects.append(ToCharger(answer))
        note = "answered locally" if not self.upstream_up else "answered"
        effects.append(Note(logging.DEBUG, f"{env.action} {note}"))
        # the charger's call first, then the answer it got: observers see them in that order
        if events:
            effects.append(Observe("charger", env.type, env.action, text, events))
        if answered:
            effects.append(Observe("harmone", _CALLRESULT, env.action, answer, answered))
        return effects

    def _meaning(
        self, sender: Direction, kind: MessageType, action: str, payload: Any, request: Any = None
    ) -> tuple[Event, ...]:
        if action not in self.watched:
            return ()
        return interpret(self.version, sender, kind, action, payload, request)

    def _observe(
        self,
        effects: list[Effect],
        sender: Direction,
        env: Envelope,
        action: str,
        text: str,
        request_text: str | None = None,
    ) -> None:
        """Report a watched frame with its meaning; frames that mean nothing are not reported.

        `request_text` is the call an answer answers (answers are read against their call).
        """
        if action not in self.watched or env.type in (
            _CALLERROR,
            _CALLRESULTERROR,
        ):
            return
        if env.type is _CALLRESULT and action not in _MEANINGFUL_ANSWERS:
            return
        try:
            payload = payload_of(decode(text), env)
            request = None
            if request_text is not None:
                request = payload_of(decode(request_text), parse_envelope(request_text))
        except FrameError:
            return
        events = interpret(self.version, sender, env.type, action, payload, request)
        if events:
            effects.append(Observe(sender, env.type, action, text, events))

    def _take_token(self, now: float, effects: list[Effect]) -> bool:
        elapsed = max(0.0, now - self._last_refill)
        self._last_refill = now
        burst = float(self.limits.flood_burst)
        self._tokens = min(burst, self._tokens + elapsed * self.limits.flood_rate)
        self._tokens -= 1.0
        if self._tokens >= 0:
            return True
        if self._tokens < -burst:
            if not self._flood_closed:
                self._flood_closed = True
                effects.append(CloseCharger(1008, "flooding: message rate limit exceeded"))
        elif self._tokens > -1.5:  # first refusal of a burst: say it once, not per frame
            effects.append(
                Note(
                    logging.WARNING,
                    f"charger exceeds {self.limits.flood_rate:g} messages/s; calls refused",
                )
            )
        return False
