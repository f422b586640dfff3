"""A secondary CPMS that is down, slow or hostile changes nothing for the charger or the
primary (issue 14); and the same rules with chargers and backends of the `ocpp` package."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ocpp.v201 import call as call201
from secondary_support import ScriptedCpms, tagged, two_backend_site
from support import FAST_RELAY, PATIENCE, charger, harmone_server, recv_json, wait_for
from websockets.asyncio.server import ServerConnection, serve

from harmone.errors import SimulatorError
from harmone.sim import SimulatedCharger, SimulatedCpms
from harmone.web.serve import RunningServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _live(srv: RunningServer, uid: str, cpid: str) -> Any:
    return srv.runtime.hub.live_state(uid, cpid)


async def _heartbeat(ws: Any, n: int) -> list[Any]:
    await ws.send(f'[2,"hb{n}","Heartbeat",{{}}]')
    return list(await recv_json(ws))


async def test_a_secondary_that_is_down_gets_the_queued_calls_once_it_is_up(
    tmp_path: Path,
) -> None:
    port = _free_port()
    secondary = ScriptedCpms(answer=tagged("secondary"), port=port)
    async with ScriptedCpms(answer=tagged("primary")) as primary, harmone_server(tmp_path) as srv:
        uid, url = await two_backend_site(srv, primary.url, secondary.url)
        async with await charger(f"{url}/CP1") as ws:
            await wait_for(lambda: bool(_live(srv, uid, "CP1").secondary_error))
            assert "secondary CPMS" in _live(srv, uid, "CP1").secondary_error
            sent = []
            for n in range(5):
                assert await _heartbeat(ws, n) == [3, f"hb{n}", {"by": "primary"}]
                sent.append(f'[2,"hb{n}","Heartbeat",{{}}]')
            assert primary.frames["CP1"] == sent
            await secondary.start()  # it comes up: after its backoff, it gets them, in order
            try:
                await wait_for(lambda: secondary.frames["CP1"] == sent)
                assert _live(srv, uid, "CP1").secondary_connected
                assert await _heartbeat(ws, 9) == [3, "hb9", {"by": "primary"}]
                await wait_for(lambda: secondary.frames["CP1"][-1] == '[2,"hb9","Heartbeat",{}]')
            finally:
                await secondary.stop()


@contextlib.asynccontextmanager
async def _deaf_cpms() -> AsyncIterator[str]:
    """A CPMS that accepts the connection and then never reads a byte."""
    stop = asyncio.Event()

    async def handler(conn: ServerConnection) -> None:
        await stop.wait()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"], max_queue=1) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        stop.set()
        # A closing handshake with a peer whose buffers are full would only end at the close
        # timeout (10 s): drop the connections instead, as a dead CPMS would.
        for conn in server.connections:
            conn.transport.abort()


@pytest.mark.parametrize(
    "bound", [{"secondary_queue": 5}, {"secondary_queue_chars": 500_000}], ids=["frames", "chars"]
)
async def test_a_secondary_that_does_not_read_costs_it_frames_not_the_charger(
    tmp_path: Path, bound: dict[str, int]
) -> None:
    relay = dataclasses.replace(FAST_RELAY, flood_burst=10_000, flood_rate=10_000.0, **bound)
    big = "x" * 200_000
    async with (
        ScriptedCpms(answer=tagged("primary")) as primary,
        _deaf_cpms() as deaf,
        harmone_server(tmp_path, relay=relay) as srv,
    ):
        uid, url = await two_backend_site(srv, primary.url, deaf)
        async with await charger(f"{url}/CP1", max_size=None) as ws:
            await wait_for(lambda: _live(srv, uid, "CP1").secondary_connected)
            n = 0
            while _live(srv, uid, "CP1").secondary_dropped == 0:
                n += 1
                assert n < 500, "the secondary's queue never filled"
                frame = json.dumps([2, f"dt{n}", "DataTransfer", {"vendorId": "v", "data": big}])
                await ws.send(frame)
                assert (await recv_json(ws))[1:] == [f"dt{n}", {"by": "primary"}]
            assert await _heartbeat(ws, 1) == [3, "hb1", {"by": "primary"}]
            await wait_for(lambda: len(primary.frames["CP1"]) == n + 1)
            assert _live(srv, uid, "CP1").upstream_connected


async def test_a_flooding_secondary_is_refused_and_cut_off_without_touching_the_charger(
    tmp_path: Path,
) -> None:
    relay = dataclasses.replace(FAST_RELAY, secondary_call_burst=5, secondary_call_rate=1.0)
    async with (
        ScriptedCpms(answer=tagged("primary")) as primary,
        ScriptedCpms(answer=tagged("secondary")) as secondary,
        harmone_server(tmp_path, relay=relay) as srv,
    ):
        uid, url = await two_backend_site(srv, primary.url, secondary.url)
        async with await charger(f"{url}/CP1") as ws:
            await wait_for(lambda: _live(srv, uid, "CP1").secondary_connected)
            reached: list[str] = []

            async def play_charger() -> None:
                # answer every call that arrives; heartbeats are checked by the test itself
                async for text in ws:
                    frame = json.loads(text)
                    if frame[0] == 2:
                        reached.append(frame[1])
                        await ws.send(json.dumps([3, frame[1], {"configurationKey": []}]))
                    else:
                        answers.put_nowait(frame)

            answers: asyncio.Queue[list[Any]] = asyncio.Queue()
            player = asyncio.create_task(play_charger())
            try:
                for i in range(200):
                    await secondary.send("CP1", f'[2,"f{i}","GetConfiguration",{{}}]')
                await ws.send('[2,"hb1","Heartbeat",{}]')
                assert await asyncio.wait_for(answers.get(), PATIENCE) == [
                    3,
                    "hb1",
                    {"by": "primary"},
                ]
                # cut off (1008) once it went on flooding, then dialled again after backoff
                await wait_for(lambda: secondary.connects >= 2)
                refused = [
                    r for r in secondary.results.values() if r[0] == 4 and r[2] == "GenericError"
                ]
                assert refused, "no call was refused"
                assert len(reached) <= 5 + 1  # the burst (and one refilled token) at most
                assert all(msg_id.startswith("f") for msg_id in reached)
                assert primary.frames["CP1"] == ['[2,"hb1","Heartbeat",{}]']
                await ws.send('[2,"hb2","Heartbeat",{}]')
                assert await asyncio.wait_for(answers.get(), PATIENCE) == [
                    3,
                    "hb2",
                    {"by": "primary"},
                ]
            finally:
                player.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await player


async def test_garbage_from_the_secondary_is_dropped(tmp_path: Path) -> None:
    async with (
        ScriptedCpms(answer=tagged("primary")) as primary,
        ScriptedCpms(answer=tagged("secondary")) as secondary,
        harmone_server(tmp_path) as srv,
    ):
        uid, url = await two_backend_site(srv, primary.url, secondary.url)
        async with await charger(f"{url}/CP1") as ws:
            await wait_for(lambda: _live(srv, uid, "CP1").secondary_connected)
            conn = secondary.conns["CP1"]
            for junk in ("hello", "[", '[9,"x"]', '{"a": 1}', "[2]", '[3,"nobody",{}]'):
                await conn.send(junk)
            await conn.send(b"\x00\x01binary")
            assert await _heartbeat(ws, 1) == [3, "hb1", {"by": "primary"}]
            # the link survived, and a good call still goes through (read-only allows it)
            await secondary.send("CP1", '[2,"g1","GetConfiguration",{}]')
            frame = json.loads(await asyncio.wait_for(ws.recv(), PATIENCE))
            assert frame[:3] == [2, "g1", "GetConfiguration"]
            await ws.send('[3,"g1",{"configurationKey":[]}]')
            await wait_for(lambda: "g1" in secondary.results)
            assert _live(srv, uid, "CP1").secondary_connected
            assert primary.frames["CP1"] == ['[2,"hb1","Heartbeat",{}]']
            assert "g1" not in primary.results


async def test_2_0_1_with_ocpp_package_peers(tmp_path: Path) -> None:
    """2.0.1, every peer from the `ocpp` package: the charger boots through the primary, the
    secondary reads its variables and is refused a start with SecurityError."""
    async with (
        SimulatedCpms() as primary,
        SimulatedCpms() as secondary,
        harmone_server(tmp_path) as srv,
    ):
        uid, url = await two_backend_site(srv, primary.url, secondary.url)
        async with SimulatedCharger(url, "SIM-2", "2.0.1") as sim:
            boot = await sim.boot()
            assert boot.status == "Accepted"
            await sim.status(1, "Available")
            await wait_for(lambda: _live(srv, uid, "SIM-2").secondary_connected)
            await wait_for(lambda: len(secondary.calls["SIM-2"]) == 2)
            assert [a for a, _ in primary.calls["SIM-2"]] == [
                "BootNotification",
                "StatusNotification",
            ]
            assert [a for a, _ in secondary.calls["SIM-2"]] == [
                "BootNotification",
                "StatusNotification",
            ]
            read = await secondary.call(
                "SIM-2",
                call201.GetVariables(
                    get_variable_data=[
                        {
                            "component": {"name": "OCPPCommCtrlr"},
                            "variable": {"name": "HeartbeatInterval"},
                        }
                    ]
                ),
            )
            assert read.get_variable_result
            with pytest.raises(SimulatorError) as refused:
                await secondary.call(
                    "SIM-2",
                    call201.RequestStartTransaction(
                        id_token={"idToken": "T", "type": "ISO14443"}, remote_start_id=1
                    ),
                )
            assert "SecurityError" in repr(refused.value.__cause__) or "Security" in str(
                refused.value
            )
            assert [a for a, _ in sim.received_calls] == ["GetVariables"]


async def test_a_secondary_answering_every_call_is_not_taken_for_a_flood(tmp_path: Path) -> None:
    # its answers follow the charger's calls: only its own calls count against its rate
    relay = dataclasses.replace(FAST_RELAY, secondary_call_burst=2, secondary_call_rate=0.5)
    async with (
        ScriptedCpms(answer=tagged("primary")) as primary,
        ScriptedCpms(answer=tagged("secondary")) as secondary,
        harmone_server(tmp_path, relay=relay) as srv,
    ):
        uid, url = await two_backend_site(srv, primary.url, secondary.url)
        async with await charger(f"{url}/CP1") as ws:
            await wait_for(lambda: _live(srv, uid, "CP1").secondary_connected)
            for n in range(60):
                assert await _heartbeat(ws, n) == [3, f"hb{n}", {"by": "primary"}]
            await wait_for(lambda: len(secondary.frames["CP1"]) == 60)
            await secondary.send("CP1", '[2,"g1","GetConfiguration",{}]')
            frame = json.loads(await asyncio.wait_for(ws.recv(), PATIENCE))
            assert frame[:2] == [2, "g1"]
            await ws.send('[3,"g1",{"configurationKey":[]}]')
            await wait_for(lambda: "g1" in secondary.results)
            assert secondary.results["g1"][0] == 3
            assert secondary.connects == 1


async def test_a_secondary_that_hangs_handshakes_does_not_hold_the_primaries_dials(
    tmp_path: Path,
) -> None:
    hung: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    relay = dataclasses.replace(FAST_RELAY, max_concurrent_dials=1)
    try:
        async with (
            ScriptedCpms(answer=tagged("primary")) as primary,
            harmone_server(tmp_path, relay=relay) as srv,
        ):
            _, url = await two_backend_site(srv, primary.url, f"ws://127.0.0.1:{port}")
            async with await charger(f"{url}/A") as a:
                await wait_for(lambda: len(hung) == 1)  # A's secondary handshake hangs
                assert await _heartbeat(a, 1) == [3, "hb1", {"by": "primary"}]
                async with await charger(f"{url}/B") as b:
                    # B's CPMS was dialled at its handshake, not after A's secondary gave up
                    assert await _heartbeat(b, 1) == [3, "hb1", {"by": "primary"}]
    finally:
        for writer in hung:
            writer.close()
        server.close()


async def test_a_secondary_that_goes_silent_is_dropped_by_the_keepalive_and_dialled_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that completes the handshake and then never answers anything, pings included."""
    import base64
    import hashlib

    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        magic = key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        token = base64.b64encode(hashlib.sha1(magic).digest()).decode()
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {token}\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
            ).encode()
        )
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    relay = dataclasses.replace(FAST_RELAY, keepalive_interval=0.2, keepalive_timeout=0.2)
    try:
        async with (
            ScriptedCpms(answer=tagged("primary")) as primary,
            harmone_server(tmp_path, relay=relay) as srv,
        ):
            uid, url = await two_backend_site(srv, primary.url, f"ws://127.0.0.1:{port}")
            async with await charger(f"{url}/CP1") as ws:
                await wait_for(lambda: len(accepted) >= 1)
                # the keep-alive drops it, and it is dialled again after backoff
                await wait_for(lambda: len(accepted) >= 2)
                assert "secondary did not answer a ping" in caplog.text
                assert await _heartbeat(ws, 1) == [3, "hb1", {"by": "primary"}]
                assert _live(srv, uid, "CP1").upstream_connected
    finally:
        for writer in accepted:
            writer.close()
        server.close()
