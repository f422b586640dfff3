"""The secondary CPMS's rule and its place in the sans-I/O session, with plain values."""

from __future__ import annotations

from typing import Any

import pytest

from harmone.ocpp.framing import parse_envelope
from harmone.ocpp.secondary import normalise_rule, parse_rule
from harmone.ocpp.session import ChargerSession, OwnCallResult, ToCharger, ToCpms, ToSecondary
from harmone.ocpp.versions import OcppVersion

V16, V201, V21 = OcppVersion.V16, OcppVersion.V201, OcppVersion.V21


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (None, "read-only"),
        ("read-only", "read-only"),
        ({"mode": "read-only"}, "read-only"),
        ("allow:", "allow:"),
        ("allow", "allow:"),
        (" allow : Reset , GetConfiguration ", "allow:Reset,GetConfiguration"),
        (
            {"mode": "deny", "actions": ["Reset", "Reset", "UpdateFirmware"]},
            "deny:Reset,UpdateFirmware",
        ),
        ({"mode": "allow", "actions": []}, "allow:"),
    ],
)
def test_rules_are_stored_in_one_text_form(given: object, stored: str) -> None:
    assert normalise_rule(given) == stored


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ("write", "mode is"),
        ("read-only:Reset", "no action list"),
        ("allow:Reboot", "'Reboot' is not an action"),
        ("allow:Re set", "not an OCPP action name"),
        ({"mode": "allow", "actions": 5}, "list of OCPP action names"),
        ({"mode": "allow", "actions": [1]}, "not an OCPP action name"),
        ({"mode": "allow", "extra": 1}, "unknown keys: extra"),
        (["allow"], 'is "read-only"'),
        ({"mode": "deny", "actions": ["Reset"] * 101}, "more than 100"),
    ],
)
def test_bad_rules_say_what_is_wrong(given: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        normalise_rule(given)


@pytest.mark.parametrize(
    ("rule", "version", "action", "allowed"),
    [
        ("read-only", V16, "GetConfiguration", True),
        ("read-only", V16, "TriggerMessage", True),
        ("read-only", V16, "ChangeConfiguration", False),
        ("read-only", V16, "GetDiagnostics", False),  # uploads to a URL the caller picks
        ("read-only", V16, "DataTransfer", False),
        ("read-only", V16, "GetVariables", False),  # a 2.x action
        ("read-only", V201, "GetVariables", True),
        ("read-only", V201, "GetBaseReport", True),
        ("read-only", V201, "SetVariables", False),
        ("read-only", V201, "GetLog", False),
        ("read-only", V21, "GetTariffs", True),
        ("read-only", V21, "RequestStartTransaction", False),
        ("allow:", V16, "GetConfiguration", False),
        ("allow:Reset", V16, "Reset", True),
        ("allow:Reset", V16, "GetConfiguration", False),
        ("deny:Reset", V201, "Reset", False),
        ("deny:Reset", V201, "SetVariables", True),
        ("garbage", V16, "Reset", False),  # an unreadable stored rule is read-only
    ],
)
def test_what_each_rule_lets_through(
    rule: str, version: OcppVersion, action: str, allowed: bool
) -> None:
    assert parse_rule(rule).allows(version, action) is allowed


def _local_answer(version: OcppVersion, action: str, payload: Any) -> dict[str, Any]:
    return {"local": action}


def _session(up: bool = True) -> ChargerSession:
    session = ChargerSession(V16, local_answer=_local_answer, upstream_up=up)
    session.mirror = True
    return session


def _kinds(effects: list[Any]) -> list[tuple[str, str]]:
    return [
        (type(e).__name__, e.text)
        for e in effects
        if isinstance(e, ToCharger | ToCpms | ToSecondary)
    ]


def test_the_session_copies_charger_calls_as_received_and_keeps_answers_by_owner() -> None:
    s = _session()
    hb = '[2, "1", "Heartbeat", {}]'
    assert _kinds(s.from_charger(hb, 0.0)) == [("ToSecondary", hb), ("ToCpms", hb)]
    # a charger call's answer from the primary goes to the charger
    assert _kinds(s.from_cpms('[3,"1",{"currentTime":"x"}]', 0.1)) == [
        ("ToCharger", '[3,"1",{"currentTime":"x"}]')
    ]
    # the secondary's call takes the slot; the primary's (same id!) waits behind it
    sec = '[2,"7","GetConfiguration",{}]'
    assert _kinds(s.secondary_call(sec, parse_envelope(sec), 0.2, 4)) == [("ToCharger", sec)]
    prim = '[2,"7","GetConfiguration",{"key":["p"]}]'
    assert _kinds(s.from_cpms(prim, 0.3)) == []
    # the charger's answer goes to the secondary, and the primary's call goes out
    answer = '[3,"7",{"configurationKey":[]}]'
    assert _kinds(s.from_charger(answer, 0.4)) == [("ToSecondary", answer), ("ToCharger", prim)]
    assert _kinds(s.from_charger(answer, 0.5)) == [("ToCpms", answer)]


def test_the_secondary_may_not_crowd_out_the_slot() -> None:
    s = _session()
    _, effects = s.own_call("GetConfiguration", {}, 0.0)
    assert len(effects) == 1  # HARMON-E's call holds the slot
    calls = [f'[2,"s{i}","GetConfiguration",{{}}]' for i in range(3)]
    for text in calls[:2]:
        assert s.secondary_call(text, parse_envelope(text), 0.1, 2) == []
    refused = s.secondary_call(calls[2], parse_envelope(calls[2]), 0.1, 2)
    assert len(refused) == 1 and isinstance(refused[0], ToSecondary)
    assert refused[0].text.startswith('[4,"s2","GenericError"')


def test_a_late_answer_to_a_secondary_call_goes_to_nobody() -> None:
    s = _session()
    sec = '[2,"9","GetConfiguration",{}]'
    s.secondary_call(sec, parse_envelope(sec), 0.0, 4)
    s.tick(s.limits.call_timeout + 1)
    late = s.from_charger('[3,"9",{}]', s.limits.call_timeout + 2)
    assert _kinds(late) == []
    assert not any(isinstance(e, OwnCallResult) for e in late)


def test_without_a_secondary_nothing_is_copied() -> None:
    s = _session()
    s.mirror = False
    assert _kinds(s.from_charger('[2,"1","Heartbeat",{}]', 0.0)) == [
        ("ToCpms", '[2,"1","Heartbeat",{}]')
    ]
