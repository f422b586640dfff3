"""Pure tests of the relay session: strings in, effects out, no sockets."""

from __future__ import annotations

import itertools
import json
from typing import Any

from call_ledger import CallLedger
from hypothesis import given, settings
from hypothesis import strategies as st

from harmone.errors import OcppError
from harmone.ocpp.events import BootAnswered
from harmone.ocpp.session import (
    ChargerSession,
    CloseCharger,
    Effect,
    Observe,
    OwnCallResult,
    SessionLimits,
    ToCharger,
    ToCpms,
)
from harmone.ocpp.versions import OcppVersion


def local_answer(version: OcppVersion, action: str, payload: Any) -> dict[str, Any]:
    if action == "Heartbeat":
        return {"currentTime": "2026-01-01T00:00:00Z"}
    raise OcppError("no", code="NotSupported")


def make(version: OcppVersion = OcppVersion.V16, **kw: Any) -> ChargerSession:
    ids = (f"hm-{i}" for i in itertools.count())
    kw.setdefault("upstream_up", True)
    return ChargerSession(
        version,
        local_answer=local_answer,
        id_factory=lambda: next(ids),
        watched=frozenset({"BootNotification"}),
        **kw,
    )


def sent(effects: list[Effect], kind: type) -> list[str]:
    return [e.text for e in effects if isinstance(e, kind)]  # type: ignore[attr-defined]


HB = '[2,"c1","Heartbeat",{}]'


def test_charger_call_is_forwarded_byte_exact() -> None:
    s = make()
    text = '[2, "c1" ,"Heartbeat",  {"x": 1.50}]'
    assert sent(s.from_charger(text, 0), ToCpms) == [text]
    answer = '[3,"c1",{"currentTime":"2026-01-01T00:00:00.000Z"}]'
    assert sent(s.from_cpms(answer, 0), ToCharger) == [answer]


def test_cpms_calls_wait_for_the_charger_to_answer_the_previous_one() -> None:
    s = make()
    a, b = '[2,"a","Reset",{"type":"Soft"}]', '[2,"b","GetConfiguration",{}]'
    assert sent(s.from_cpms(a, 0), ToCharger) == [a]
    assert sent(s.from_cpms(b, 0), ToCharger) == []  # held: "a" is in flight
    assert s.queued == 1
    effects = s.from_charger('[3,"a",{"status":"Accepted"}]', 1)
    assert sent(effects, ToCpms) == ['[3,"a",{"status":"Accepted"}]']
    assert sent(effects, ToCharger) == [b]


def test_own_call_waits_for_the_cpms_call_and_its_answer_never_reaches_the_cpms() -> None:
    s = make()
    s.from_cpms('[2,"a","Reset",{"type":"Soft"}]', 0)
    msg_id, effects = s.own_call("SetChargingProfile", {"connectorId": 1}, 0)
    assert effects == []  # waits for "a"
    effects = s.from_charger('[3,"a",{"status":"Accepted"}]', 1)
    own = sent(effects, ToCharger)
    assert len(own) == 1 and json.loads(own[0])[:3] == [2, msg_id, "SetChargingProfile"]
    effects = s.from_charger(f'[3,"{msg_id}",{{"status":"Accepted"}}]', 2)
    assert sent(effects, ToCpms) == []
    assert [e for e in effects if isinstance(e, OwnCallResult)] == [
        OwnCallResult(msg_id, payload={"status": "Accepted"})
    ]


def test_cpms_call_waits_for_an_own_call() -> None:
    s = make()
    msg_id, effects = s.own_call("SetChargingProfile", {}, 0)
    assert len(sent(effects, ToCharger)) == 1
    assert sent(s.from_cpms('[2,"a","Reset",{}]', 0), ToCharger) == []
    effects = s.from_charger(f'[4,"{msg_id}","NotSupported","no",{{}}]', 1)
    result = next(e for e in effects if isinstance(e, OwnCallResult))
    assert result.error is not None and result.error.code == "NotSupported"
    assert sent(effects, ToCharger) == ['[2,"a","Reset",{}]']
    assert sent(effects, ToCpms) == []


def test_timeout_frees_the_slot_and_a_late_own_answer_is_dropped() -> None:
    s = make(limits=SessionLimits(call_timeout=10))
    msg_id, _ = s.own_call("GetConfiguration", {}, 0)
    s.from_cpms('[2,"a","Reset",{}]', 1)
    assert s.tick(9.9) == []
    effects = s.tick(10)
    assert OwnCallResult(msg_id, timed_out=True) in effects
    assert sent(effects, ToCharger) == ['[2,"a","Reset",{}]']
    late = s.from_charger(f'[3,"{msg_id}",{{}}]', 11)
    assert sent(late, ToCpms) == [] and sent(late, ToCharger) == []
    # ... while the answer to the CPMS's call still goes to the CPMS
    assert sent(s.from_charger('[3,"a",{}]', 12), ToCpms) == ['[3,"a",{}]']


def test_own_ids_never_collide_with_ids_the_cpms_has_in_use() -> None:
    ids = iter(["a", "a", "b"])
    s = ChargerSession(
        OcppVersion.V16, local_answer=local_answer, id_factory=lambda: next(ids), upstream_up=True
    )
    s.from_cpms('[2,"a","Reset",{}]', 0)
    msg_id, _ = s.own_call("GetConfiguration", {}, 0)
    assert msg_id == "b"


def test_watched_calls_and_their_answers_are_observed() -> None:
    s = make()
    boot = '[2,"1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'
    effects = s.from_charger(boot, 0)
    assert [e.action for e in effects if isinstance(e, Observe)] == ["BootNotification"]
    ans = s.from_cpms('[3,"1",{"status":"Accepted","currentTime":"t","interval":10}]', 0)
    obs = [e for e in ans if isinstance(e, Observe)]
    assert obs and obs[0].sender == "cpms"
    assert obs[0].events == (BootAnswered(accepted=True, status="Accepted", interval=10),)
    assert [e for e in s.from_charger(HB, 0) if isinstance(e, Observe)] == []


def test_upstream_down_answers_locally_and_says_so() -> None:
    s = make(upstream_up=False)
    effects = s.from_charger(HB, 0)
    assert sent(effects, ToCpms) == []
    (answer,) = sent(effects, ToCharger)
    assert json.loads(answer) == [3, "c1", {"currentTime": "2026-01-01T00:00:00Z"}]
    effects = s.from_charger('[2,"c2","DataTransfer",{"vendorId":"x"}]', 0)
    assert json.loads(sent(effects, ToCharger)[0])[:3] == [4, "c2", "NotSupported"]


def test_link_loss_answers_the_calls_the_cpms_never_answered() -> None:
    s = make()
    s.from_charger(HB, 0)
    effects = s.set_upstream(False)
    (answer,) = sent(effects, ToCharger)
    assert json.loads(answer)[:2] == [3, "c1"]
    assert s.set_upstream(True) == []


def test_malformed_frames_get_the_protocols_answer_per_version() -> None:
    s16, s201 = make(OcppVersion.V16), make(OcppVersion.V201)
    (e16,) = sent(s16.from_charger('[2,"9","Heartbeat",', 0), ToCharger)
    assert json.loads(e16)[:3] == [4, "9", "FormationViolation"]
    (e201,) = sent(s201.from_charger('[2,"9","Heartbeat",', 0), ToCharger)
    assert json.loads(e201)[:3] == [4, "9", "FormatViolation"]
    (e,) = sent(s201.from_charger("garbage", 0), ToCharger)
    assert json.loads(e)[:3] == [4, "-1", "RpcFrameworkError"]
    (e,) = sent(s201.from_charger('[7,"5","X",{}]', 0), ToCharger)
    assert json.loads(e)[:3] == [4, "5", "MessageTypeNotSupported"]
    # a broken answer cannot be answered: it is only reported
    effects = s201.from_charger('[3,"5","oops"]', 0)
    assert sent(effects, ToCharger) == [] and sent(effects, ToCpms) == []
    # garbage from the CPMS is answered to the CPMS, never forwarded to the charger
    effects = s201.from_cpms('[2,"z"', 0)
    assert sent(effects, ToCharger) == [] and len(sent(effects, ToCpms)) == 1


def test_a_flooding_charger_is_refused_then_closed() -> None:
    s = make(limits=SessionLimits(flood_rate=1, flood_burst=5))
    forwarded = refused = 0
    closed: list[CloseCharger] = []
    for i in range(20):
        effects = s.from_charger(f'[2,"{i}","Heartbeat",{{}}]', 0)
        forwarded += len(sent(effects, ToCpms))
        refused += len(sent(effects, ToCharger))
        closed += [e for e in effects if isinstance(e, CloseCharger)]
    assert forwarded == 5  # the burst
    assert refused == 5  # then CallErrors for another burst's worth
    assert [c.code for c in closed] == [1008]  # then one close, and silence
    # the budget refills with time
    assert sent(s.from_charger('[2,"x","Heartbeat",{}]', 100), ToCpms)


# -- the one-CALL-in-flight rule under arbitrary interleavings -------------------------------
TIMEOUT = 30.0
_events = st.lists(
    st.one_of(
        st.tuples(st.just("cpms_call")),
        st.tuples(st.just("own_call")),
        # the charger answers one of the calls it got and has not answered yet (oldest first
        # when `pick` is 0; later ones and late answers to timed-out calls too)
        st.tuples(st.just("charger_answers"), st.integers(0, 3), st.booleans()),
        st.tuples(st.just("time"), st.floats(min_value=0, max_value=40)),
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(_events)
def test_never_more_than_one_call_in_flight_and_nothing_lost(events: list[tuple[Any, ...]]) -> None:
    """Whatever the interleaving: one CALL in flight at most; every CPMS call reaches the
    charger exactly once, in order, and its answer goes back to the CPMS exactly once; every
    own call reaches the charger once and gets exactly one result; own answers stay here."""
    s = make(limits=SessionLimits(call_timeout=TIMEOUT))
    ledger = CallLedger(TIMEOUT)
    now = 0.0
    unanswered: list[str] = []  # ids of calls the charger got and has not answered yet
    n = 0

    def run(effects: list[Effect]) -> None:
        ledger.effects(effects, now)
        for text in sent(effects, ToCharger):
            frame = json.loads(text)
            if frame[0] == 2:
                unanswered.append(frame[1])

    for ev in events:
        if ev[0] == "cpms_call":
            n += 1
            text = f'[2,"c{n}","Reset",{{}}]'
            ledger.cpms_frame(text)
            run(s.from_cpms(text, now))
        elif ev[0] == "own_call":
            msg_id, effects = s.own_call("GetConfiguration", {}, now)
            ledger.own_call(msg_id)
            run(effects)
        elif ev[0] == "charger_answers" and unanswered:
            answered = unanswered.pop(ev[1] % len(unanswered))
            if ev[2]:
                answer = f'[3,"{answered}",{{"n":{n}}}]'
            else:
                answer = f'[4,"{answered}","NotSupported","no",{{}}]'
            ledger.charger_frame(answer)
            effects = s.from_charger(answer, now)
            run(effects)
            # a CPMS call's answer goes to the CPMS once, even late; an own call's never
            expected = [] if answered in ledger.own_ids else [answer]
            assert sent(effects, ToCpms) == expected
        elif ev[0] == "time":
            now += ev[1]
            ledger.time(now)
            run(s.tick(now))
    now = ledger.drain(s, now)
    assert not s.busy and s.queued == 0
    ledger.assert_nothing_lost()
