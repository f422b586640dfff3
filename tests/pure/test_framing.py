"""Pure tests of the OCPP-J envelope parser and frame builders."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harmone.errors import FrameError
from harmone.ocpp.framing import (
    MessageType,
    call_error_frame,
    call_frame,
    call_result_frame,
    decode,
    parse_envelope,
    payload_of,
)


@pytest.mark.parametrize(
    ("text", "mtype", "msg_id", "third"),
    [
        ('[2,"1","Heartbeat",{}]', MessageType.CALL, "1", "Heartbeat"),
        (
            '[2, "abc-1" , "BootNotification", {"a": [1,2]}]',
            MessageType.CALL,
            "abc-1",
            "BootNotification",
        ),
        ('  [ 3 ,"x",{"currentTime":"2026-01-01T00:00:00Z"}]  ', MessageType.CALLRESULT, "x", None),
        ('[4,"7","NotImplemented","nope",{}]', MessageType.CALLERROR, "7", "NotImplemented"),
        (
            '[6,"s1","NotifyPeriodicEventStream",{}]',
            MessageType.SEND,
            "s1",
            "NotifyPeriodicEventStream",
        ),
        ('[5,"r",{}]', MessageType.CALLRESULTERROR, "r", None),
        ('[2,"a\\"b","Heartbeat",{}]', MessageType.CALL, 'a"b', "Heartbeat"),
        ('[3,"id",[]]', MessageType.CALLRESULT, "id", None),
    ],
)
def test_envelope_is_read_without_the_payload(
    text: str, mtype: MessageType, msg_id: str, third: str | None
) -> None:
    env = parse_envelope(text)
    assert (env.type, env.id, env.action) == (mtype, msg_id, third)


@pytest.mark.parametrize(
    ("text", "details"),
    [
        ("", {}),
        ("hello", {}),
        ("{}", {}),
        ('[2,"1","Heartbeat",{}', {"type": 2, "id": "1"}),  # truncated
        ('[2,1,"Heartbeat",{}]', {"type": 2}),  # numeric id
        ('[2,"1"]', {"type": 2, "id": "1"}),  # no action
        ('[4,"1"]', {"type": 4, "id": "1"}),  # CALLERROR without code
        ('[3,"1","Heartbeat"]', {"type": 3, "id": "1"}),  # CALLRESULT with a string payload
        ('[2,"' + "x" * 37 + '","Heartbeat",{}]', {"type": 2}),  # id too long
    ],
)
def test_broken_frames_raise_frame_error_with_what_could_be_read(
    text: str, details: dict[str, object]
) -> None:
    with pytest.raises(FrameError) as info:
        parse_envelope(text)
    assert info.value.details == details


def test_unknown_message_type_is_its_own_error() -> None:
    with pytest.raises(FrameError) as info:
        parse_envelope('[9,"1","Heartbeat",{}]')
    assert info.value.code == "MessageTypeNotSupported"
    assert info.value.details == {"id": "1"}


def test_builders_produce_frames_the_parser_and_json_agree_on() -> None:
    text = call_frame("hm-1", "SetChargingProfile", {"connectorId": 1})
    assert json.loads(text) == [2, "hm-1", "SetChargingProfile", {"connectorId": 1}]
    assert parse_envelope(text).action == "SetChargingProfile"
    assert json.loads(call_result_frame("1", {})) == [3, "1", {}]
    err = json.loads(call_error_frame("1", "NotSupported", "d" * 300, None))
    assert err[:3] == [4, "1", "NotSupported"] and len(err[3]) == 255 and err[4] == {}


def test_decode_and_payload_of() -> None:
    text = '[2,"1","Authorize",{"idTag":"X"}]'
    assert payload_of(decode(text), parse_envelope(text)) == {"idTag": "X"}
    with pytest.raises(FrameError):
        decode("[1,2")
    with pytest.raises(FrameError):
        decode('{"a":1}')


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300)
@given(
    st.sampled_from([2, 3, 4, 6]),
    st.text(min_size=1, max_size=36),
    st.text(min_size=1, max_size=20),
    _json,
)
def test_envelope_matches_a_full_json_decode(
    mtype: int, msg_id: str, action: str, payload: object
) -> None:
    if mtype == 3:
        frame: list[object] = [3, msg_id, payload if isinstance(payload, dict) else {}]
    elif mtype == 4:
        frame = [4, msg_id, action, "description", {}]
    else:
        frame = [mtype, msg_id, action, payload]
    text = json.dumps(frame, ensure_ascii=bool(len(msg_id) % 2))
    env = parse_envelope(text)
    assert env.type == mtype and env.id == msg_id
    assert env.action == (None if mtype == 3 else action)


@settings(max_examples=500)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes_the_parser(text: str) -> None:
    with contextlib.suppress(FrameError):
        parse_envelope(text)
