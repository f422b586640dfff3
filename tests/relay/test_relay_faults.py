"""Relay faults of issue 10, over real sockets: a CPMS that goes silent, identities, log lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support import RawCpms, charger, harmone_server, make_site, recv_json, wait_for
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harmone.config import RelayConfig

SILENT_RELAY = RelayConfig(
    upstream_connect_timeout=1.0, call_timeout=1.0, backoff_initial=0.05, backoff_max=0.3
)


async def test_a_cpms_that_stops_answering_is_treated_as_away(tmp_path: Path) -> None:
    async with (
        RawCpms(auto_answer=False) as cpms,
        harmone_server(tmp_path, relay=SILENT_RELAY) as srv,
    ):
        site, url = await make_site(srv, cpms.url)
        async with await charger(f"{url}/SILENT") as ws:
            await wait_for(lambda: "SILENT" in cpms.conns)
            live = srv.runtime.hub.live_state(site.uid, "SILENT")
            assert live is not None and live.upstream_connected
            boot = '[2,"b1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'
            await ws.send(boot)
            answer = await recv_json(ws, 10)  # HARMON-E answers once the CPMS is overdue
            assert answer[:2] == [3, "b1"] and answer[2]["status"] == "Accepted"
            assert not live.upstream_connected
            assert "did not answer" in (live.upstream_error or "")
            # the link counts as down: the next call is answered locally and journaled
            await ws.send(
                '[2,"s1","StatusNotification",{"connectorId":1,"errorCode":'
                '"NoError","status":"Available"}]'
            )
            assert (await recv_json(ws))[:2] == [3, "s1"]  # not a second answer to b1
            # ... and the link is redialled; the CPMS, answering again, gets the journal
            cpms.auto_answer = True
            await wait_for(lambda: cpms.connects >= 2, 10)
            await wait_for(lambda: live.upstream_connected, 10)
            await ws.send('[2,"h1","Heartbeat",{}]')
            assert await recv_json(ws) == [3, "h1", {"cpms": "answer"}]
            sent = [json.loads(f) for f in cpms.frames["SILENT"]]
            actions = [f[2] for f in sent if f[0] == 2]
            assert actions.count("BootNotification") == 1  # never delivered twice
            assert actions == ["BootNotification", "StatusNotification", "Heartbeat"]


async def test_a_silent_cpms_closes_the_charger_in_strict_mode(tmp_path: Path) -> None:
    async with (
        RawCpms(auto_answer=False) as cpms,
        harmone_server(tmp_path, relay=SILENT_RELAY) as srv,
    ):
        site, url = await make_site(srv, cpms.url)
        await srv.runtime.store.sites.update(site.uid, offline_mode="strict")
        srv.runtime.hub.site_changed(site.uid)
        async with await charger(f"{url}/STRICT") as ws:
            await ws.send('[2,"h1","Heartbeat",{}]')
            assert (await recv_json(ws, 10))[:2] == [3, "h1"]  # answered once, locally
            with pytest.raises(ConnectionClosed):
                await recv_json(ws, 10)
            assert ws.close_code == 1012


async def test_a_percent_encoded_space_is_relayed_for_16_and_refused_for_2x(
    tmp_path: Path,
) -> None:
    async with RawCpms() as cpms, harmone_server(tmp_path) as srv:
        site, url = await make_site(srv, cpms.url)
        async with await charger(f"{url}/CP%207") as ws:
            assert ws.subprotocol == "ocpp1.6"
            await wait_for(lambda: "CP%207" in cpms.conns)  # the CPMS sees it as received
            await ws.send('[2,"h","Heartbeat",{}]')
            assert (await recv_json(ws))[2] == {"cpms": "answer"}
        async with await charger(f"{url}/CP%208", ["ocpp2.0.1", "ocpp1.6"]) as ws:
            assert ws.subprotocol == "ocpp1.6"  # 2.x cannot carry this identity
        with pytest.raises(InvalidStatus) as info:
            await charger(f"{url}/CP%209", ["ocpp2.0.1"])
        assert info.value.response.status_code == 400
        assert b"identifierString" in info.value.response.body
        with pytest.raises(InvalidStatus) as info:
            await charger(f"{url}/CP%0A9")  # control characters stay refused
        assert info.value.response.status_code == 400
        await srv.runtime.hub.flush_attempts()
        log = await srv.runtime.store.attempts.of_site(site.uid)
        assert "control characters" in (log[0].reason or "")


@contextlib.asynccontextmanager
async def refusing_cpms() -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP port that accepts and at once closes every connection (a CPMS that is
    unreachable), counting the attempts."""
    accepted: list[int] = []

    async def slam(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(slam, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}", accepted
    finally:
        server.close()
        await server.wait_closed()


async def test_a_charger_accepted_without_its_cpms_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="harmone.relay")
    async with refusing_cpms() as (cpms_url, attempts), harmone_server(tmp_path) as srv:
        site, url = await make_site(srv, cpms_url)
        async with await charger(f"{url}/ALONE"):
            await wait_for(lambda: len(attempts) >= 5, 10)  # it keeps retrying
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        accepted = [m for m in lines if "accepted without its CPMS" in m]
        assert len(accepted) == 1
        assert f"site={site.uid} charger=ALONE" in accepted[0]
        failures = [m for m in lines if "CPMS handshake failed" in m or "unreachable" in m]
        assert 1 <= len(failures) <= 2  # once, not once per retry


async def test_a_refused_handshake_logs_only_harmones_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with harmone_server(tmp_path) as srv:
        with pytest.raises(InvalidStatus):
            await charger(f"{srv.runtime.cloud_base_url}/no-such-site/CP-1")
        await srv.runtime.hub.flush_attempts()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "no such site" in refused[0]


async def test_refusal_reasons_say_what_to_do(tmp_path: Path) -> None:
    async with harmone_server(tmp_path) as srv:
        _, url = await make_site(srv, None)
        with pytest.raises(InvalidStatus) as info:
            await charger(f"{url}/CP-1", ["ocpp1.5"])
        assert b"set the charger's OCPP protocol to OCPP-J 1.6" in info.value.response.body
        # the charger's id without a site UID: not "no identity after the site UID"
        with pytest.raises(InvalidStatus) as info:
            await charger(f"{srv.runtime.cloud_base_url}/CP-1")
        assert info.value.response.status_code == 404
        assert b"no site UID in the URL" in info.value.response.body
        with pytest.raises(InvalidStatus) as info:
            await charger(url)  # the site's URL without the charger's id
        assert b"must append its own id" in info.value.response.body


async def test_a_charger_that_stops_answering_pings_is_dropped(tmp_path: Path) -> None:
    relay = RelayConfig(keepalive_interval=0.3, keepalive_timeout=0.3, backoff_initial=0.05)
    async with RawCpms() as cpms, harmone_server(tmp_path, relay=relay) as srv:
        site, url = await make_site(srv, cpms.url)
        # a charger whose network vanished: its TCP connection stays open, nothing answers
        host, port = url.removeprefix("ws://").split("/", 1)[0].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            (
                f"GET /{site.uid}/MUTE HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
            ).encode()
        )
        assert (await reader.readline()).startswith(b"HTTP/1.1 101")
        # a charger that answers pings (the websockets client does) stays
        async with await charger(f"{url}/ALIVE") as alive:
            await wait_for(lambda: srv.runtime.hub.link(site.uid, "MUTE") is not None)
            await wait_for(lambda: srv.runtime.hub.link(site.uid, "MUTE") is None, 10)
            await wait_for(lambda: "MUTE" in cpms.closed)  # its CPMS link went with it
            await alive.send('[2,"h","Heartbeat",{}]')
            assert (await recv_json(alive))[:2] == [3, "h"]
            assert srv.runtime.hub.link(site.uid, "ALIVE") is not None
        writer.close()
