"""Hostile input (issue 5): property tests of the frame parser, the session and the readers of
watched payloads, then the live OCPP endpoint over real sockets, then slowloris.

The pure properties extend `test_framing.py` (plain random text) with frames *built* to reach
the parser's corners: escapes that are not JSON (`\\q`, `\\u12`, `\\ud800`), digits that are
not ASCII, huge numbers and deep nesting. The live tests send each kind of bad input from one
charger and then check that a second, well-behaved charger on the same server is still
answered by its CPMS, that a new charger can still connect and that the API still answers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import httpx
import pytest
import pytest_asyncio
from call_ledger import CallLedger
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import PATIENCE, RawCpms, charger, harmone_server, make_site, wait_for
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from harmone.clock import SystemClock
from harmone.config import RelayConfig
from harmone.errors import FrameError
from harmone.loadmgmt.traffic import cpms_cap, current_per_phase
from harmone.ocpp.events import WATCHED_ACTIONS, MeterReading, ProfileSet, interpret
from harmone.ocpp.framing import (
    MAX_ID_LENGTH,
    Envelope,
    MessageType,
    decode,
    parse_envelope,
)
from harmone.ocpp.session import (
    ChargerSession,
    CloseCharger,
    Effect,
    Observe,
    SessionLimits,
    ToCharger,
    ToCpms,
)
from harmone.ocpp.standalone import StandaloneResponder
from harmone.ocpp.versions import OcppVersion
from harmone.relay.observer import apply_events
from harmone.relay.offline import JOURNALED
from harmone.relay.state import FrameRecord, LiveCharger
from harmone.services.accounts import Accounts
from harmone.web.console.frames import describe_frames
from harmone.web.head_deadline import HeadDeadlineProtocol
from harmone.web.serve import RunningServer

# -- strategies ------------------------------------------------------------------------------

#: Pieces that reach the parser's corners when strung together.
_PIECES = st.sampled_from(
    [
        "[",
        "]",
        ",",
        '"',
        ":",
        "{",
        "}",
        " ",
        "\n",
        "\\",
        '\\"',
        "\\\\",
        "\\q",
        "\\u12",
        "\\u00e9",
        "\\ud800",
        "\\udc00",
        "\\ud83d\\ude00",
        "2",
        "3",
        "4",
        "5",
        "6",
        "9",
        "-1",
        "0x2",
        "²",
        "٣",
        "null",
        "true",
        "1e999",
        "NaN",
        "\x00",
        "é",
        '"Heartbeat"',
        '"BootNotification"',
        '"StatusNotification"',
        '"MeterValues"',
        '"hm-1"',
        "{}",
        "[]",
    ]
)
_SOUP = st.lists(_PIECES, max_size=40).map("".join)
_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)  # too big for a float
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
_JSON = st.recursive(
    _SCALAR,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)
_DEEP = st.integers(min_value=1, max_value=5000).map(lambda d: "[" * d + "]" * d)
_QUOTED = st.one_of(
    st.text(max_size=40).map(json.dumps),
    st.lists(_PIECES, max_size=6).map(lambda p: '"' + "".join(p).replace('"', "") + '"'),
    st.integers().map(str),
)
_ACTION = st.sampled_from(
    [*sorted(WATCHED_ACTIONS), "Heartbeat", "DataTransfer", "Authorize", "NoSuchAction", ""]
).map(json.dumps)
_PAYLOAD = st.one_of(_JSON.map(json.dumps), _DEEP, _SOUP)
_TYPE = st.sampled_from(["2", "3", "4", "5", "6", "0", "9", "99999999999999999999", "²"])


@st.composite
def _shaped(draw: st.DrawFn) -> str:
    """`[type, id, action, payload…` with any part possibly wrong."""
    parts = [draw(_TYPE), draw(_QUOTED), draw(_ACTION | _QUOTED), draw(_PAYLOAD)]
    parts = parts[: draw(st.integers(1, 4))]
    tail = draw(st.sampled_from(["]", "", ",", ',"x"]', "]]", " ] "]))
    return "[" + ",".join(parts) + tail


#: Text a charger or a CPMS might send: well-formed, near misses and garbage.
FRAMES = st.one_of(_shaped(), _SOUP, st.text(max_size=60))
#: As received from a socket: websockets and uvicorn only deliver valid UTF-8.
SOCKET_FRAMES = FRAMES.filter(lambda t: _utf8(t))


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- the parser --------------------------------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(FRAMES)
def test_envelope_parser_raises_only_frame_errors(text: str) -> None:
    try:
        env = parse_envelope(text)
    except FrameError as exc:
        details = exc.details if isinstance(exc.details, dict) else {}
        if "id" in details:  # an id HARMON-E will quote back in its CallError
            assert _utf8(details["id"])
        return
    assert isinstance(env, Envelope)
    assert 1 <= len(env.id) <= MAX_ID_LENGTH
    assert _utf8(env.id) and (env.action is None or _utf8(env.action))


@settings(max_examples=300, deadline=None)
@given(st.one_of(FRAMES, _DEEP.map(lambda d: f'[2,"1","X",{d}]')))
def test_decode_raises_only_frame_errors_even_for_deep_nesting(text: str) -> None:
    with contextlib.suppress(FrameError):
        frame = decode(text)
        assert isinstance(frame, list) and len(frame) >= 3


def test_a_hundred_thousand_nested_arrays_are_a_frame_error_not_a_crash() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(FrameError):
        decode(f'[2,"1","BootNotification",{deep}]')
    env = parse_envelope(f'[2,"1","BootNotification",{deep}]')  # the envelope is still read
    assert env.action == "BootNotification"


# -- the session and what reads watched payloads -----------------------------------------------

#: Well-formed CPMS calls (ids may repeat), so that calls queue up behind each other.
_CPMS_CALL = st.builds(
    '[2,"cpms-{}","{}",{{}}]'.format,
    st.integers(0, 5),
    st.sampled_from(["Reset", "GetConfiguration", "SetChargingProfile"]),
)
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("charger"), SOCKET_FRAMES),
        st.tuples(st.just("cpms"), SOCKET_FRAMES | _CPMS_CALL),
        st.tuples(st.just("own"), st.sampled_from(["SetChargingProfile", "GetConfiguration"])),
        # the charger answers the call in flight: a CallResult (True) or a CallError
        st.tuples(st.just("answer"), st.booleans()),
        st.tuples(st.just("tick"), st.floats(0, 100)),
        st.tuples(st.just("link"), st.booleans()),
    ),
    max_size=25,
)


def _session(version: OcppVersion, up: bool) -> ChargerSession:
    ids = iter(range(10**9))
    responder = StandaloneResponder(SystemClock(), lambda: next(ids), heartbeat_interval=300)
    return ChargerSession(
        version,
        local_answer=responder.answer,
        watched=WATCHED_ACTIONS,
        limits=SessionLimits(call_timeout=5, flood_rate=5, flood_burst=10),
        upstream_up=up,
        journaled=JOURNALED[version],
    )


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(list(OcppVersion)), st.booleans(), _OPS)
def test_session_turns_any_input_into_effects(
    version: OcppVersion, up: bool, ops: list[tuple[str, Any]]
) -> None:
    """Arbitrary frames both ways, own calls, time and link changes: only effects come out,
    everything HARMON-E would send can be sent (valid UTF-8), what observers are handed (the
    registry, the message inspector) never raises, and no call is lost: one CALL in flight at
    most, every CPMS CALL delivered to the charger exactly once and in order, every own call
    delivered once with exactly one result (see `call_ledger`)."""
    session = _session(version, up)
    ledger = CallLedger(session.limits.call_timeout)
    live = LiveCharger("site", "cp")
    now = 0.0
    for kind, arg in ops:
        effects: list[Effect]
        if kind == "answer":
            if ledger.slot is None:
                continue
            msg_id = ledger.slot[0]
            arg = f'[3,"{msg_id}",{{}}]' if arg else f'[4,"{msg_id}","GenericError","",{{}}]'
            kind = "charger"
        if kind == "charger":
            ledger.charger_frame(arg)
            effects = session.from_charger(arg, now)
        elif kind == "cpms":
            ledger.cpms_frame(arg)
            effects = session.from_cpms(arg, now)
        elif kind == "own":
            msg_id, effects = session.own_call(arg, {"connectorId": 1}, now)
            ledger.own_call(msg_id)
        elif kind == "tick":
            now += arg
            ledger.time(now)
            effects = session.tick(now)
        else:
            effects = session.set_upstream(arg)
        ledger.effects(effects, now)
        for effect in effects:
            if isinstance(effect, ToCharger | ToCpms):
                assert _utf8(effect.text), effect
            elif isinstance(effect, Observe):
                apply_events(live, effect.events, datetime.now(UTC))
            elif isinstance(effect, CloseCharger):
                assert effect.code == 1008
        texts = [
            FrameRecord(time.time(), "charger", "cpms", t)
            for t in (arg,)
            if kind in ("charger", "cpms")
        ]
        describe_frames(texts)
    ledger.drain(session, now)
    ledger.assert_nothing_lost()


def _profile16(limit: Any) -> dict[str, Any]:
    return {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 9,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
            },
        },
    }


def _as_limit(value: Any) -> float | None:
    """The oracle: a 1.6 schedule limit is a JSON number that is a multiple of 0.1 in exact
    decimal (the schema's rule) and finite as a float; anything else is not a limit."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:  # more than a float holds: no limit at all, as a charger reads it
            return math.inf
    if not math.isfinite(value):
        return None
    return value if (Fraction(str(value)) * 10).denominator == 1 else None


@settings(max_examples=400, deadline=None)
@given(_JSON | st.floats() | st.integers(min_value=-(10**400), max_value=10**400))
def test_a_cpms_profile_limit_reads_as_the_number_sent_or_not_at_all(value: Any) -> None:
    """Whatever the CPMS puts in a limit, load management gets the number it sent (as the
    charger would apply it) or no profile at all: `true` is not 1 A, NaN is not a limit, and a
    400-digit limit is a profile without a limit, not an error and not a cap."""
    events = interpret(
        OcppVersion.V16,
        "charger",
        MessageType.CALLRESULT,
        "SetChargingProfile",
        {"status": "Accepted"},
        _profile16(value),
    )
    expected = _as_limit(value)
    if expected is None:
        assert events == (), value
        return
    (event,) = events
    assert isinstance(event, ProfileSet)
    (period,) = event.profile.schedules[0].periods
    assert period.limit == expected
    cap = cpms_cap(event.connector_id, event.profile, 3, 230.0)
    assert cap.amps == (expected if 0 <= expected < math.inf else None)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=30) | st.floats().map(repr) | st.integers().map(str))
def test_a_sampled_current_reads_as_the_decimal_sent_or_not_at_all(text: str) -> None:
    """1.6 sends sampled values as strings: a finite decimal is that current, anything else
    (NaN, 1e999, words) is no reading; it is never a crash or a made-up number."""
    (event,) = interpret(
        OcppVersion.V16,
        "charger",
        MessageType.CALL,
        "MeterValues",
        {
            "connectorId": 1,
            "transactionId": 7,
            "meterValue": [
                {
                    "timestamp": "2026-01-01T00:00:00Z",
                    "sampledValue": [
                        {"value": "230", "measurand": "Voltage"},
                        {"value": text, "measurand": "Current.Import", "phase": "L1"},
                    ],
                }
            ],
        },
    )
    assert isinstance(event, MeterReading)
    try:
        expected: float | None = float(text)
    except ValueError:
        expected = None
    if expected is not None and not math.isfinite(expected):
        expected = None
    currents = [s.value for s in event.samples if s.measurand == "Current.Import"]
    assert currents == ([] if expected is None else [expected])
    amps = current_per_phase(event.samples, 1, 230.0)
    assert amps == (None if expected is None else (max(0.0, expected),))


def test_the_message_inspector_shows_a_deeply_nested_frame_as_unreadable() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    (shown,) = describe_frames([FrameRecord(time.time(), "charger", "cpms", f'[2,"1","X",{deep}]')])
    assert shown["kind"] == "Unreadable"


# -- the live endpoint -------------------------------------------------------------------------

CPMS_ANSWER = {"cpms": "answer"}
MAX_FRAME = 256 * 1024
RELAY = RelayConfig(
    upstream_connect_timeout=1.0,
    call_timeout=5.0,
    backoff_initial=0.05,
    backoff_max=0.3,
    max_frame_bytes=MAX_FRAME,
    flood_rate=20.0,
    flood_burst=40,
)


def garbage_proof_cpms() -> RawCpms:
    """A CPMS that reads only the id of each CALL (so that no garbage can break it), answers
    it with CPMS_ANSWER and records every frame."""
    return RawCpms(
        subprotocols=("ocpp1.6", "ocpp2.0.1"), default_answer=CPMS_ANSWER, garbage_proof=True
    )


@dataclass
class Relay:
    """One HARMON-E with a relayed (load-managed) site and a standalone site, and a
    well-behaved charger that stays connected throughout."""

    srv: RunningServer
    cpms: RawCpms
    relayed: str  # OCPP URL of the site with a CPMS
    standalone: str  # OCPP URL of the site without one
    good: ClientConnection
    api: httpx.AsyncClient
    counter: int = 0

    def new_id(self, prefix: str) -> str:
        """A charger id no other test of the module used (they share this HARMON-E)."""
        self.counter += 1
        return f"{prefix}-{self.counter}"

    async def assert_alive(self) -> None:
        """The good charger is answered by its CPMS, a new charger gets in, the API answers."""
        self.counter += 1
        msg_id = f"alive-{self.counter}"
        await self.good.send(f'[2,"{msg_id}","Heartbeat",{{}}]')
        assert await _next(self.good) == [3, msg_id, CPMS_ANSWER]
        async with await charger(f"{self.relayed}/NEW-{self.counter}") as fresh:
            await fresh.send('[2,"n","Heartbeat",{}]')
            assert await _next(fresh) == [3, "n", CPMS_ANSWER]
        assert (await self.api.get("/healthz")).json() == {"status": "ok"}


LOAD_CONFIG = {
    "policy": "equal_share",
    "min_interval": 0,
    "tree": {"id": "grid", "max_current": 32},
    "default_charger": {"max_current": 32, "phases": 3},
}


#: The live tests share one HARMON-E (one event loop for the module): starting one per test
#: was most of their time, and one bad charger after another on the same server is the harder
#: test of "one bad charger never affects another".
LIVE = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def relay(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Relay]:
    tmp_path = tmp_path_factory.mktemp("fuzz")
    async with garbage_proof_cpms() as cpms, harmone_server(tmp_path, relay=RELAY) as srv:
        store = srv.runtime.store
        await Accounts(store).create_user("fuzz@example.com", "correct horse battery", "admin")
        token = await Accounts(store).create_token("fuzz@example.com")
        site, relayed = await make_site(srv, cpms.url, "Relayed")
        _, standalone = await make_site(srv, None, "Standalone")
        async with httpx.AsyncClient(
            base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as api:
            r = await api.put(f"/api/v1/sites/{site.uid}/load-management", json=LOAD_CONFIG)
            assert r.status_code == 200, r.text
            async with await charger(f"{relayed}/GOOD") as good:
                yield Relay(srv, cpms, relayed, standalone, good, api)


async def _next(ws: ClientConnection, timeout: float = PATIENCE) -> Any:
    """The next frame decoded, or ("closed", code) once the connection is closed.

    HARMON-E's own calls (load management's SetChargingProfile on the load-managed site) may
    come at any time: they are accepted, as a well-behaved charger would, and skipped."""
    try:
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if not (frame[:1] == [2] and str(frame[1]).startswith("hm-")):
                return frame
            await ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
    except ConnectionClosed:
        return ("closed", ws.close_code)


def _big_data_transfer(size: int) -> str:
    head, tail = '[2,"big","DataTransfer",{"vendorId":"fuzz","data":"', '"}]'
    return head + "x" * (size - len(head) - len(tail)) + tail


DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "9" * 400  # valid JSON, too big for a float
METER = (
    '[2,"m","MeterValues",{"connectorId":1,"transactionId":1,"meterValue":[{"timestamp":'
    '"2026-11-24T10:00:00Z","sampledValue":[{"value":%s,"measurand":"Current.Import"}]}]}]'
)

# (case, site, frame sent, what the bad charger gets back first): an expected frame prefix,
# ("closed", code), or None for nothing at all (an answer cannot be answered).
CASES: list[tuple[str, str, str | bytes, Any]] = [
    ("truncated JSON", "relayed", '[2,"q","Heartbeat",', [4, "q", "FormationViolation"]),
    ("an object", "relayed", '{"a": 1}', [4, "-1", "ProtocolError"]),
    ("null", "relayed", "null", [4, "-1", "ProtocolError"]),
    ("empty array", "relayed", "[]", [4, "-1", "ProtocolError"]),
    ("numeric id", "relayed", '[2,1,"Heartbeat",{}]', [4, "-1", "ProtocolError"]),
    ("string type", "relayed", '["2","x","Heartbeat",{}]', [4, "-1", "ProtocolError"]),
    ("numeric action", "relayed", '[2,"x",7,{}]', [4, "x", "FormationViolation"]),
    ("unknown type", "relayed", '[9,"x","Heartbeat",{}]', [4, "x", "GenericError"]),
    ("id too long", "relayed", f'[2,"{"i" * 37}","Heartbeat",{{}}]', [4, "-1", "ProtocolError"]),
    ("bad escape in id", "relayed", '[2,"a\\q","Heartbeat",{}]', [4, "-1", "ProtocolError"]),
    ("lone surrogate id", "standalone", '[2,"\\ud800","Heartbeat",{}]', [4, "-1", "ProtocolError"]),
    ("bad escape in action", "relayed", '[2,"x","Heart\\u12",{}]', [4, "x", "FormationViolation"]),
    (
        "payload not JSON, local",
        "standalone",
        '[2,"x","Heartbeat",{oops]',
        [4, "x", "FormationViolation"],
    ),
    (
        "payload not JSON, relayed as is",
        "relayed",
        '[2,"x","Heartbeat",{oops]',
        [3, "x", CPMS_ANSWER],
    ),
    ("unknown action, relayed", "relayed", '[2,"u","NoSuchAction",{}]', [3, "u", CPMS_ANSWER]),
    (
        "unknown action, local",
        "standalone",
        '[2,"u","NoSuchAction",{}]',
        [4, "u", "NotImplemented"],
    ),
    ("answer to nothing", "relayed", '[3,"never",{}]', None),
    ("broken error", "relayed", '[4,"x"]', None),
    (
        "deep nesting, relayed",
        "relayed",
        f'[2,"d","BootNotification",{DEEP}]',
        [3, "d", CPMS_ANSWER],
    ),
    (
        "deep nesting, local",
        "standalone",
        f'[2,"d","BootNotification",{DEEP}]',
        [4, "d", "FormationViolation"],
    ),
    (
        "deep status, relayed",
        "relayed",
        f'[2,"d","StatusNotification",{DEEP}]',
        [3, "d", CPMS_ANSWER],
    ),
    ("float overflow in MeterValues", "relayed", METER % HUGE_INT, [3, "m", CPMS_ANSWER]),
    ("largest frame", "relayed", _big_data_transfer(MAX_FRAME), [3, "big", CPMS_ANSWER]),
    ("frame one byte too big", "relayed", _big_data_transfer(MAX_FRAME + 1), ("closed", 1009)),
    ("binary frame", "relayed", b'[2,"b","Heartbeat",{}]', ("closed", 1003)),
]


@LIVE
@pytest.mark.parametrize(
    ("site", "frame", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_hostile_frame_hits_only_its_sender(
    relay: Relay, site: str, frame: str | bytes, expected: Any
) -> None:
    base = relay.relayed if site == "relayed" else relay.standalone
    async with await charger(f"{base}/{relay.new_id('BAD')}", max_size=None) as bad:
        await bad.send(frame)
        if expected is not None:
            got = await _next(bad)
            if isinstance(expected, tuple):
                assert got == expected
            else:
                assert got[: len(expected)] == expected, got
        if not isinstance(expected, tuple):  # still open: still served
            # Frames from one charger are handled in order, so the answer to this call comes
            # after anything the bad frame caused: it being next shows nothing else came.
            await bad.send('[2,"after","Heartbeat",{}]')
            after = await _next(bad)
            assert after[:2] == [3, "after"], after
    await relay.assert_alive()


@LIVE
async def test_message_id_reuse_is_relayed_as_sent(relay: Relay) -> None:
    cpid = relay.new_id("DUP")
    async with await charger(f"{relay.relayed}/{cpid}") as ws:
        for _ in range(2):
            await ws.send('[2,"dup","Heartbeat",{}]')
        assert [await _next(ws), await _next(ws)] == [[3, "dup", CPMS_ANSWER]] * 2
        assert relay.cpms.frames[cpid] == ['[2,"dup","Heartbeat",{}]'] * 2
    await relay.assert_alive()


@LIVE
async def test_a_flooding_charger_is_refused_then_closed_and_nobody_else_notices(
    relay: Relay,
) -> None:
    cpid = relay.new_id("FLOOD")
    async with await charger(f"{relay.relayed}/{cpid}") as ws:
        frames = [f'[2,"f{i}","Heartbeat",{{}}]' for i in range(RELAY.flood_burst * 4)]
        for text in frames:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(text)
        answers: list[Any] = []
        while (got := await _next(ws)) and not isinstance(got, tuple):
            answers.append(got)
        assert got == ("closed", 1008)
    refused = [a for a in answers if a[0] == 4]
    assert refused and all(a[2] == "GenericError" and "rate limit" in a[3] for a in refused)
    assert len(relay.cpms.frames[cpid]) <= RELAY.flood_burst + 5  # the rest never left
    await relay.assert_alive()


@LIVE
@pytest.mark.parametrize(
    ("garbage", "answer"),
    [
        ('[2,"a\\q","Reset",{}]', [4, "-1", "ProtocolError"]),  # bad escape in the id
        ('[2,"r","Re\\u12",{}]', [4, "r", "FormationViolation"]),  # bad escape in the action
        ("[²]", [4, "-1", "ProtocolError"]),  # a digit int() refuses
        ('[3,"x\\q",{}]', None),  # a broken answer is not answered
    ],
)
async def test_garbage_from_the_cpms_never_reaches_the_charger_nor_breaks_the_link(
    relay: Relay, garbage: str, answer: list[Any] | None
) -> None:
    cpid = relay.new_id("VICTIM")
    async with await charger(f"{relay.relayed}/{cpid}") as ws:
        await wait_for_conn(relay.cpms, cpid)
        cpms_side = relay.cpms.conns[cpid]
        await cpms_side.send(garbage)
        await cpms_side.send('[2,"ok","Reset",{"type":"Soft"}]')
        assert await _next(ws) == [2, "ok", "Reset", {"type": "Soft"}]  # nothing before it
        await ws.send('[2,"still","Heartbeat",{}]')
        assert await _next(ws) == [3, "still", CPMS_ANSWER]  # same CPMS link, still up
        errors = [json.loads(f)[:3] for f in relay.cpms.frames[cpid] if f.startswith("[4")]
        assert errors == ([answer] if answer is not None else [])
        links = relay.srv.runtime.hub.links
        assert [link.live.upstream_connected for k, link in links.items() if k[1] == cpid] == [True]
        assert relay.cpms.conns[cpid] is cpms_side  # never redialled
    await relay.assert_alive()


async def wait_for_conn(cpms: RawCpms, cpid: str) -> None:
    await wait_for(lambda: cpid in cpms.conns)


async def _raw_upgrade(
    srv: RunningServer, path: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket handshake by hand (for frames no client library sends)."""
    port = int(srv.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_upgrade_request(path))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def _upgrade_request(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
    ).encode()


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@LIVE
async def test_a_text_frame_that_is_not_utf8_closes_only_its_sender(relay: Relay) -> None:
    path = relay.relayed.split("//", 1)[1].split("/", 1)[1]
    reader, writer = await _raw_upgrade(relay.srv, f"/{path}/{relay.new_id('RAW')}")
    try:
        writer.write(_masked_frame(0x1, b'[2,"x","Heartbeat",{"a":"\xff\xfe"}]'))
        close = await asyncio.wait_for(reader.read(64), PATIENCE)
        assert close[0] == 0x88 and int.from_bytes(close[2:4], "big") == 1007  # close, 1007
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    await relay.assert_alive()


# -- arbitrary frames over a real socket ----------------------------------------------------

_LIVE_CLOSE_CODES = {1003, 1008, 1009}


@LIVE
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=st.lists(SOCKET_FRAMES, min_size=1, max_size=4), local=st.booleans())
async def test_live_endpoint_survives_arbitrary_frames(
    relay: Relay, frames: list[str], local: bool
) -> None:
    """Whatever one charger sends, it is answered or closed with a reason, and afterwards a
    Heartbeat of its own is still answered; the good charger never notices."""
    base = relay.standalone if local else relay.relayed
    async with await charger(f"{base}/{relay.new_id('HYP')}") as ws:
        for text in frames:
            await ws.send(text)
        await ws.send('[2,"sentinel","Heartbeat",{}]')
        for _ in range(len(frames) + 2):  # each frame gets at most one answer
            got = await _next(ws)
            if isinstance(got, tuple):
                assert got[1] in _LIVE_CLOSE_CODES, got
                break
            if isinstance(got, list) and got[:2] == [3, "sentinel"]:
                break
        else:
            raise AssertionError("no answer to the sentinel")
    await relay.assert_alive()


# -- slowloris ----------------------------------------------------------------------------------


@LIVE
async def test_slowloris_handshakes_are_cut_off_and_others_are_served(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that sends its upgrade request one byte at a time, and one that sends nothing,
    are closed once the request-head deadline passes, long before the head is complete;
    meanwhile chargers come and go. (How soon after the deadline: bench/deadlines_bench.py.)"""
    monkeypatch.setattr(HeadDeadlineProtocol, "head_timeout", 1.5)
    port = int(relay.srv.url.rsplit(":", 1)[1])
    path = "/" + relay.relayed.split("//", 1)[1].split("/", 1)[1] + "/" + relay.new_id("SLOW")
    request = _upgrade_request(path)
    slow_r, slow_w = await asyncio.open_connection("127.0.0.1", port)
    idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
    try:
        sent = 0
        # At least 0.1 s a byte, the head would take 20 s or more; the last byte never goes.
        while sent < len(request) - 1 and not slow_r.at_eof():
            try:
                slow_w.write(request[sent : sent + 1])
                await slow_w.drain()
            except ConnectionError:
                break
            sent += 1
            if sent % 4 == 0:
                await relay.assert_alive()  # others are served while it dribbles
            await asyncio.sleep(0.1)
        assert sent < len(request) - 1, "the dribbled head was never cut off"
        assert await asyncio.wait_for(idle_r.read(), PATIENCE) == b""  # the silent one too
        await relay.assert_alive()
    finally:
        for w in (slow_w, idle_w):
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()


@LIVE
async def test_the_deadline_stops_once_the_head_is_in(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A charger whose handshake was quick stays connected past the deadline, and a keep-alive
    HTTP client may pause between requests (its next head gets a new deadline)."""
    monkeypatch.setattr(HeadDeadlineProtocol, "head_timeout", 0.5)
    async with await charger(f"{relay.relayed}/{relay.new_id('PATIENT')}") as ws:
        await asyncio.sleep(1.0)
        await ws.send('[2,"p","Heartbeat",{}]')
        assert await _next(ws) == [3, "p", CPMS_ANSWER]
    async with httpx.AsyncClient(base_url=relay.srv.url) as client:
        assert (await client.get("/healthz")).status_code == 200
        await asyncio.sleep(0.2)
        assert (await client.get("/healthz")).status_code == 200
