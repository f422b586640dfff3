"""The relay over real sockets on 127.0.0.1: raw frames, handshakes, link life."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from support import (
    FAST_RELAY,
    ON_SHARED_SERVER,
    PATIENCE,
    RawCpms,
    charger,
    harmone_server,
    make_site,
    recv_json,
    wait_for,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harmone.config import RelayConfig
from harmone.errors import CallErrorReceived, CallTimeout, ChargerNotConnected
from harmone.store.records import Attempt
from harmone.web.serve import RunningServer

#: A 4 KiB frame limit, for oversized frames that are cheap to send.
SMALL_FRAMES = RelayConfig(
    upstream_connect_timeout=1.0, max_frame_bytes=4096, backoff_initial=0.05, backoff_max=0.3
)


async def attempts(srv: RunningServer, site_uid: str) -> list[Attempt]:
    await srv.runtime.hub.flush_attempts()
    return list(await srv.runtime.store.attempts.of_site(site_uid))


async def test_frames_are_relayed_byte_exact_both_ways(tmp_path: Path) -> None:
    async with RawCpms(auto_answer=False) as cpms, harmone_server(tmp_path) as srv:
        _, url = await make_site(srv, cpms.url)
        async with await charger(f"{url}/CP-1") as ws:
            weird = '[2 ,  "m1","Heartbeat" , {"a": 1.50, "b": "\\u00e9"}   ]'
            await ws.send(weird)
            await cpms.wait_for(lambda: cpms.frames["CP-1"] == [weird])
            answer = '[3,"m1",{"currentTime" : "2026-11-24T00:00:00.000+00:00"}]'
            await cpms.send("CP-1", answer)
            assert await asyncio.wait_for(ws.recv(), PATIENCE) == answer
            call = '[2,"srv-1","GetConfiguration",{"key":["HeartbeatInterval"]}]'
            await cpms.send("CP-1", call)
            assert await asyncio.wait_for(ws.recv(), PATIENCE) == call
            reply = '[3,"srv-1",{"configurationKey":[]}]'
            await ws.send(reply)
            await cpms.wait_for(lambda: cpms.frames["CP-1"][-1] == reply)


async def test_subprotocol_is_the_one_the_cpms_chose(tmp_path: Path) -> None:
    async with RawCpms(subprotocols=("ocpp1.6",)) as cpms, harmone_server(tmp_path) as srv:
        _, url = await make_site(srv, cpms.url)
        async with await charger(f"{url}/CP-2", ["ocpp2.0.1", "ocpp1.6"]) as ws:
            assert ws.subprotocol == "ocpp1.6"
            assert cpms.offered["CP-2"] == ["ocpp2.0.1", "ocpp1.6"]  # charger's order kept


async def test_authorization_header_is_forwarded_unchanged(tmp_path: Path) -> None:
    async with RawCpms() as cpms, harmone_server(tmp_path) as srv:
        _, url = await make_site(srv, cpms.url)
        auth = "Basic Q1AtMzpzM2NyM3Q="
        async with await charger(f"{url}/CP-3", additional_headers={"Authorization": auth}):
            assert cpms.headers["CP-3"]["Authorization"] == auth


@pytest.mark.parametrize("status", [401, 404])
async def test_cpms_refusal_refuses_the_charger_with_the_same_status(
    tmp_path: Path, status: int
) -> None:
    async with RawCpms(refuse_status=status) as cpms, harmone_server(tmp_path) as srv:
        site, url = await make_site(srv, cpms.url)
        with pytest.raises(InvalidStatus) as info:
            await charger(f"{url}/CP-4")
        assert info.value.response.status_code == status
        (attempt,) = await attempts(srv, site.uid)
        assert not attempt.accepted
        assert attempt.reason == f"CPMS refused the connection: HTTP {status}"


@pytest.mark.parametrize(
    ("suffix", "protocols", "status", "reason_part"),
    [
        ("/CP-5", ["ocpp1.5"], 400, "offered only ocpp1.5"),
        ("/CP-5", [], 400, "offered no OCPP version"),
        ("/" + "X" * 49, ["ocpp1.6"], 400, "longer than 48"),
        ("/CP%3A5", ["ocpp1.6"], 400, "contains ':'"),
        ("", ["ocpp1.6"], 404, "must append its own id"),
        ("/a/b", ["ocpp1.6"], 404, "extra path segments"),
    ],
)
@ON_SHARED_SERVER
async def test_bad_handshakes_are_refused_with_a_status_and_logged(
    shared_srv: RunningServer, suffix: str, protocols: list[str], status: int, reason_part: str
) -> None:
    # one server for the table: each case has a site (and so a connection log) of its own
    site, url = await make_site(shared_srv, None)
    with pytest.raises(InvalidStatus) as info:
        await charger(url + suffix, protocols)
    assert info.value.response.status_code == status
    assert reason_part.encode() in info.value.response.body
    (attempt,) = await attempts(shared_srv, site.uid)
    assert reason_part in (attempt.reason or "")


async def test_unknown_site_is_refused_and_kept_in_the_unknown_site_log(tmp_path: Path) -> None:
    async with harmone_server(tmp_path) as srv:
        base = srv.runtime.cloud_base_url
        with pytest.raises(InvalidStatus) as info:
            await charger(f"{base}/no-such-site/CP-6")
        assert info.value.response.status_code == 404
        await srv.runtime.hub.flush_attempts()
        (attempt,) = await srv.runtime.store.attempts.unknown_sites()
        assert attempt.site_uid == "no-such-site" and attempt.charge_point_id == "CP-6"
        assert "no such site" in (attempt.reason or "")


async def test_unreachable_cpms_does_not_keep_the_charger_out(tmp_path: Path) -> None:
    cpms = RawCpms()
    await cpms.start()
    port = cpms.port
    await cpms.stop()  # nothing listens there now
    async with harmone_server(tmp_path) as srv:
        _, url = await make_site(srv, f"ws://127.0.0.1:{port}")
        async with await charger(f"{url}/CP-7", ["ocpp2.0.1", "ocpp1.6"]) as ws:
            assert ws.subprotocol == "ocpp2.0.1"  # its first choice
            await ws.send('[2,"h1","Heartbeat",{}]')
            answer = await recv_json(ws)
            assert answer[0] == 3 and answer[1] == "h1" and "currentTime" in answer[2]
            live = srv.runtime.hub.live_state(*next(iter(srv.runtime.hub.links)))
            assert live is not None and "unreachable" in (live.upstream_error or "")
            # The CPMS comes up: the relay dials it by itself and traffic flows.
            cpms2 = RawCpms(port=port)
            async with cpms2:
                await wait_for(lambda: "CP-7" in cpms2.conns)
                assert cpms2.offered["CP-7"] == ["ocpp2.0.1"]  # only the version in use
                await wait_for(lambda: live.upstream_connected)
                await ws.send('[2,"h2","Heartbeat",{}]')
                assert await recv_json(ws) == [3, "h2", {"cpms": "answer"}]


async def test_cpms_drop_keeps_the_charger_and_reconnects(tmp_path: Path) -> None:
    cpms = RawCpms()
    await cpms.start()
    try:
        async with harmone_server(tmp_path) as srv:
            _, url = await make_site(srv, cpms.url)
            async with await charger(f"{url}/CP-8") as ws:
                await ws.send('[2,"a","Heartbeat",{}]')
                assert (await recv_json(ws))[2] == {"cpms": "answer"}
                await cpms.stop()
                await wait_for(
                    lambda: (
                        not srv.runtime.hub.links[
                            next(iter(srv.runtime.hub.links))
                        ].live.upstream_connected
                    )
                )
                await ws.send('[2,"b","Heartbeat",{}]')
                local = await recv_json(ws)
                assert local[1] == "b" and "currentTime" in local[2]  # answered locally
                await cpms.start()  # same port
                await wait_for(lambda: cpms.connects >= 2)
                await wait_for(
                    lambda: (
                        srv.runtime.hub.links[
                            next(iter(srv.runtime.hub.links))
                        ].live.upstream_connected
                    )
                )
                await ws.send('[2,"c","Heartbeat",{}]')
                assert (await recv_json(ws)) == [3, "c", {"cpms": "answer"}]
    finally:
        await cpms.stop()


async def test_charger_leaving_closes_its_upstream(tmp_path: Path) -> None:
    async with RawCpms() as cpms, harmone_server(tmp_path) as srv:
        _, url = await make_site(srv, cpms.url)
        ws = await charger(f"{url}/CP-9")
        await wait_for(lambda: "CP-9" in cpms.conns)
        await ws.close()
        await wait_for(lambda: "CP-9" in cpms.closed)
        assert cpms.closed["CP-9"] == 1000
        await wait_for(lambda: not srv.runtime.hub.links)


async def test_same_identity_replaces_the_old_connection(tmp_path: Path) -> None:
    async with RawCpms() as cpms, harmone_server(tmp_path) as srv:
        _, url = await make_site(srv, cpms.url)
        first = await charger(f"{url}/CP-10")
        second = await charger(f"{url}/CP-10")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(first.recv(), PATIENCE)
        assert first.close_reason and "replaced" in first.close_reason
        await second.send('[2,"x","Heartbeat",{}]')
        assert (await recv_json(second))[1] == "x"
        assert len(srv.runtime.hub.links) == 1
        await second.close()


async def test_standalone_site_answers_the_charger_itself(tmp_path: Path) -> None:
    async with harmone_server(tmp_path) as srv:
        _, url = await make_site(srv, None)
        async with await charger(f"{url}/CP-11") as ws:
            await ws.send(
                json.dumps(
                    [
                        2,
                        "1",
                        "BootNotification",
                        {"chargePointVendor": "V", "chargePointModel": "M"},
                    ]
                )
            )
            boot = await recv_json(ws)
            assert boot[2]["status"] == "Accepted" and boot[2]["interval"] > 0
            await ws.send(
                json.dumps(
                    [
                        2,
                        "2",
                        "StartTransaction",
                        {
                            "connectorId": 1,
                            "idTag": "TAG",
                            "meterStart": 0,
                            "timestamp": "2026-11-24T10:00:00Z",
                        },
                    ]
                )
            )
            start = await recv_json(ws)
            assert isinstance(start[2]["transactionId"], int)
            assert start[2]["idTagInfo"]["status"] == "Accepted"
            await ws.send('[2,"3","NoSuchAction",{}]')
            assert (await recv_json(ws))[:3] == [4, "3", "NotImplemented"]


async def test_malformed_and_oversized_frames_hit_only_their_sender(tmp_path: Path) -> None:
    relay = SMALL_FRAMES
    async with RawCpms() as cpms, harmone_server(tmp_path, relay=relay) as srv:
        _, url = await make_site(srv, cpms.url)
        good = await charger(f"{url}/GOOD")
        bad = await charger(f"{url}/BAD", ["ocpp2.0.1"])
        await bad.send('[2,"q","Heartbeat",')
        assert (await recv_json(bad))[:3] == [4, "q", "FormatViolation"]
        assert cpms.frames["BAD"] == []  # never relayed
        await bad.send("x" * 5000)  # over the 4 KiB limit
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(bad.recv(), PATIENCE)
        assert bad.close_code == 1009
        await good.send('[2,"g","Heartbeat",{}]')
        assert (await recv_json(good))[1] == "g"
        await good.close()


async def test_own_calls_wait_for_the_cpms_call_and_never_reach_the_cpms(tmp_path: Path) -> None:
    """One CALL in flight towards the charger, and nothing lost: CPMS calls that arrive while
    one is in flight, and an own call among them, are each delivered once, the CPMS's in order;
    every answer to a CPMS call reaches the CPMS once; the own call's answer never does."""
    async with RawCpms(auto_answer=False) as cpms, harmone_server(tmp_path) as srv:
        site, url = await make_site(srv, cpms.url)
        hub = srv.runtime.hub
        async with await charger(f"{url}/CP-12") as ws:

            async def barrier(name: str, then: str | None = None) -> None:
                """A Heartbeat through the CPMS; `then` is sent by the CPMS just before its
                answer. Frames on each side are handled in order, so once the charger has the
                answer HARMON-E has handled everything both sides sent before, and the answer
                being the charger's next frame shows nothing else was sent to it meanwhile."""
                call = f'[2,"{name}","Heartbeat",{{}}]'
                await ws.send(call)
                await wait_for(lambda: call in cpms.frames["CP-12"])
                if then is not None:
                    await cpms.send("CP-12", then)
                await cpms.send("CP-12", f'[3,"{name}",{{"currentTime":"t"}}]')
                assert await recv_json(ws) == [3, name, {"currentTime": "t"}]

            await wait_for(lambda: "CP-12" in cpms.conns)
            await cpms.send("CP-12", '[2,"cpms-1","Reset",{"type":"Soft"}]')
            assert (await recv_json(ws))[1] == "cpms-1"
            # while cpms-1 is unanswered: a second CPMS call, an own call, a third CPMS call
            await barrier("hb-1", then='[2,"cpms-2","GetConfiguration",{}]')
            own = asyncio.create_task(
                hub.call(site.uid, "CP-12", "GetConfiguration", {"key": ["X"]})
            )
            await barrier("hb-2", then='[2,"cpms-3","ClearCache",{}]')  # nothing was sent
            assert not own.done()
            await ws.send('[3,"cpms-1",{"status":"Accepted"}]')
            received: list[str] = []
            for _ in range(3):  # each call is sent once the previous one is answered
                try:
                    frame = await recv_json(ws)
                except TimeoutError:
                    raise AssertionError(f"only {received} reached the charger") from None
                assert frame[0] == 2, frame
                received.append(frame[1])
                if frame[1].startswith("hm-"):
                    assert frame[2:] == ["GetConfiguration", {"key": ["X"]}]
                    await ws.send(json.dumps([3, frame[1], {"configurationKey": []}]))
                    assert await own == {"configurationKey": []}
                else:
                    await ws.send(json.dumps([3, frame[1], {"for": frame[1]}]))
            assert [r for r in received if not r.startswith("hm-")] == ["cpms-2", "cpms-3"]
            assert len(received) == 3 and own.done()
            await barrier("hb-3")  # nothing more was sent to the charger
            # the CPMS got each answer once, in order, and never the own call's answer
            assert cpms.frames["CP-12"] == [
                '[2,"hb-1","Heartbeat",{}]',
                '[2,"hb-2","Heartbeat",{}]',
                '[3,"cpms-1",{"status":"Accepted"}]',
                '[3, "cpms-2", {"for": "cpms-2"}]',
                '[3, "cpms-3", {"for": "cpms-3"}]',
                '[2,"hb-3","Heartbeat",{}]',
            ]
            # an own call answered with a CallError raises, and a silent charger times out
            own = asyncio.create_task(hub.call(site.uid, "CP-12", "Reset", {}))
            mine = await recv_json(ws)
            await ws.send(json.dumps([4, mine[1], "NotSupported", "no", {}]))
            with pytest.raises(CallErrorReceived):
                await own
            with pytest.raises(CallTimeout):
                await hub.call(site.uid, "CP-12", "Reset", {}, timeout=0.2)
        with pytest.raises(ChargerNotConnected):
            await hub.call(site.uid, "CP-12", "Reset", {})


async def test_compression_is_negotiated(tmp_path: Path) -> None:
    async with harmone_server(tmp_path) as srv:
        _, url = await make_site(srv, None)
        async with await charger(f"{url}/CP-13", compression="deflate") as ws:
            assert ws.response is not None
            assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
            await ws.send('[2,"1","Heartbeat",{}]')
            assert (await recv_json(ws))[1] == "1"


async def test_late_cpms_with_another_version_makes_the_charger_renegotiate(
    tmp_path: Path,
) -> None:
    # HARMON-E stops waiting for the CPMS after 0.2 s; the CPMS answers after 0.6 s at the
    # earliest. Both timers run on one event loop, so they fire in that order on any machine.
    relay = dataclasses.replace(FAST_RELAY, upstream_connect_timeout=0.2)
    async with (
        RawCpms(subprotocols=("ocpp1.6",), accept_delay=0.6) as cpms,
        harmone_server(tmp_path, relay=relay) as srv,
    ):
        _, url = await make_site(srv, cpms.url)
        ws = await charger(f"{url}/CP-14", ["ocpp2.0.1", "ocpp1.6"])
        assert ws.subprotocol == "ocpp2.0.1"  # accepted before the CPMS answered
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), PATIENCE)
        assert ws.close_code == 1012 and "ocpp1.6" in (ws.close_reason or "")
        cpms.accept_delay = 0
        async with await charger(f"{url}/CP-14", ["ocpp2.0.1", "ocpp1.6"]) as again:
            assert again.subprotocol == "ocpp1.6"


async def test_cpms_handshakes_are_bounded_during_a_reconnect_burst(tmp_path: Path) -> None:
    relay = RelayConfig(
        upstream_connect_timeout=5.0, backoff_initial=0.05, backoff_max=0.3, max_concurrent_dials=2
    )
    async with RawCpms(accept_delay=0.3) as cpms, harmone_server(tmp_path, relay=relay) as srv:
        _, url = await make_site(srv, cpms.url)
        chargers = await asyncio.gather(*(charger(f"{url}/B-{i}") for i in range(6)))
        await wait_for(lambda: len(cpms.conns) == 6)
        assert cpms.peak_handshaking == 2
        for ws in chargers:
            await ws.close()
