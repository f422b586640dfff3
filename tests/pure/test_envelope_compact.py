"""The envelope parser's shortcut for compact frames reads every frame as the general parser
does: the same envelope, or the same refusal with the same details."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harmone.errors import FrameError
from harmone.ocpp.framing import Envelope, MessageType, _parse_envelope, parse_envelope


def outcome(parse: object, text: str) -> Envelope | tuple[str, str, object]:
    assert callable(parse)
    try:
        result = parse(text)
    except FrameError as exc:
        return ("refused", exc.code, exc.details)
    assert isinstance(result, Envelope)
    return result


# Pieces a frame is made of, including the awkward ones: escapes, quotes, long ids, spaces,
# a string where an object belongs, a missing closing bracket.
_STRING_BODIES = st.sampled_from(
    ["1", "abc-1", "x" * 36, "x" * 37, "", 'a\\"b', "a\\\\", "\\u0041", "\\q", "é", "Heartbeat"]
)
_PIECE = st.one_of(
    st.sampled_from(["[", "]", ",", " ", "{}", '{"a":1}', "2", "3", "4", "5", "6", "7", "23"]),
    _STRING_BODIES.map(lambda body: f'"{body}"'),
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_PIECE, min_size=1, max_size=9))
def test_any_sequence_of_frame_pieces_is_read_as_the_general_parser_reads_it(
    pieces: list[str],
) -> None:
    text = "".join(pieces)
    assert outcome(parse_envelope, text) == outcome(_parse_envelope, text)


@pytest.mark.parametrize(
    "text",
    [
        '[2,"1","Heartbeat",{}]',
        '[2,"1","Heartbeat"]',
        '[3,"1",{}]',
        '[3,"1","oops"]',
        '[3,"1","oops",{}]',
        '[4,"1","GenericError","",{}]',
        '[5,"1","GenericError","",{}]',
        '[6,"1","NotifyPeriodicEventStream",{}]',
        '[2,"a\\"b","Heartbeat",{}]',
        '[2,"1","Heart\\"beat",{}]',
        '[2,"' + "x" * 37 + '","Heartbeat",{}]',
        '[2,"","Heartbeat",{}]',
        '[2,"1","Heartbeat",{}',
        '[2,"1" ,"Heartbeat",{}]',
        '[3,"1" ,"oops"]',
        '[7,"1","Heartbeat",{}]',
    ],
)
def test_frames_at_the_edge_of_the_compact_form_are_read_as_the_general_parser_reads_them(
    text: str,
) -> None:
    assert outcome(parse_envelope, text) == outcome(_parse_envelope, text)


def test_a_compact_call_and_its_answer_are_read() -> None:
    assert parse_envelope('[2,"42","MeterValues",{"connectorId":1}]') == Envelope(
        MessageType.CALL, "42", "MeterValues"
    )
    assert parse_envelope('[3,"42",{}]') == Envelope(MessageType.CALLRESULT, "42", None)
