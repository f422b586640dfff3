"""An oracle for the calls a `ChargerSession` sends the charger, written from the rules.

`CallLedger` is told what goes into a session (the CPMS's CALLs, HARMON-E's own calls, the
charger's frames, the passing of time) and every effect that comes out, and checks:

* at most one CALL is in flight towards the charger: a CALL goes out only once the previous
  one was answered (a frame from the charger with its id) or its `call_timeout` has passed;
* nothing is lost: once drained, every CPMS CALL was delivered to the charger exactly once,
  in the order the CPMS sent them, and every own call was delivered once, in order, and got
  exactly one `OwnCallResult`;
* answers to own calls never reach the CPMS.

It reads frames with the envelope parser only, so it holds for any input, garbage included.
"""

from __future__ import annotations

from collections import Counter

from harmone.errors import FrameError
from harmone.ocpp.framing import Envelope, MessageType, parse_envelope
from harmone.ocpp.session import ChargerSession, Effect, OwnCallResult, ToCharger, ToCpms

__all__ = ["CallLedger"]

_ANSWERS = (MessageType.CALLRESULT, MessageType.CALLERROR, MessageType.CALLRESULTERROR)


def _envelope(text: str) -> Envelope | None:
    try:
        return parse_envelope(text)
    except FrameError:
        return None


class CallLedger:
    def __init__(self, call_timeout: float) -> None:
        self.call_timeout = call_timeout
        #: CALLs the CPMS sent, as text, in its order; and those the charger got, in its order.
        self.queued_cpms: list[str] = []
        self.delivered_cpms: list[str] = []
        #: Ids of own calls in the order they were made; and in the order the charger got them.
        self.own_ids: list[str] = []
        self.delivered_own: list[str] = []
        self.own_results: Counter[str] = Counter()
        #: The call in flight towards the charger: (id, when it was sent).
        self.slot: tuple[str, float] | None = None

    # -- what goes in (call these before feeding the session) --
    def cpms_frame(self, text: str) -> None:
        env = _envelope(text)
        if env is not None and env.type is MessageType.CALL:
            self.queued_cpms.append(text)

    def own_call(self, msg_id: str) -> None:
        assert msg_id not in self.own_ids, f"own id {msg_id} reused"
        self.own_ids.append(msg_id)

    def charger_frame(self, text: str) -> None:
        env = _envelope(text)
        if (
            env is not None
            and env.type in _ANSWERS
            and self.slot is not None
            and env.id == self.slot[0]
        ):
            self.slot = None

    def time(self, now: float) -> None:
        if self.slot is not None and now >= self.slot[1] + self.call_timeout:
            self.slot = None

    # -- what comes out --
    def effects(self, effects: list[Effect], now: float) -> None:
        for effect in effects:
            if isinstance(effect, ToCharger):
                env = _envelope(effect.text)
                if env is None or env.type is not MessageType.CALL:
                    continue
                assert self.slot is None, (
                    f"{env.id} sent while {self.slot[0]} is still in flight"
                    if self.slot is not None
                    else ""
                )
                self.slot = (env.id, now)
                if effect.origin == "cpms":
                    self.delivered_cpms.append(effect.text)
                else:
                    assert env.id in self.own_ids, f"a CALL HARMON-E never made: {effect.text}"
                    self.delivered_own.append(env.id)
            elif isinstance(effect, ToCpms):
                env = _envelope(effect.text)
                if env is not None and env.type in _ANSWERS:
                    assert env.id not in self.own_ids, f"own answer reached the CPMS: {effect}"
            elif isinstance(effect, OwnCallResult):
                assert effect.id in self.own_ids, f"a result for a call never made: {effect}"
                self.own_results[effect.id] += 1

    # -- the end --
    def drain(self, session: ChargerSession, now: float) -> float:
        """Let every call in flight time out until the session holds nothing; the time then."""
        for _ in range(len(self.queued_cpms) + len(self.own_ids) + 1):
            deadline = session.next_deadline()
            if deadline is None:
                break
            now = max(now, deadline)
            self.time(now)
            self.effects(session.tick(now), now)
        return now

    def assert_nothing_lost(self) -> None:
        assert self.delivered_cpms == self.queued_cpms, (
            "CPMS calls not delivered exactly once, in order",
            self.queued_cpms,
            self.delivered_cpms,
        )
        assert self.delivered_own == self.own_ids, (self.own_ids, self.delivered_own)
        assert self.own_results == Counter(self.own_ids), (
            "own calls without exactly one result",
            self.own_ids,
            self.own_results,
        )
