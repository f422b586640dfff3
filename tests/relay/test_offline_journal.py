"""Nothing lost while a CPMS is away: the offline journal, its replay and id reconciliation."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from ocpp.v16 import call as call16
from support import harmone_server, make_site, wait_for
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from harmone.services.accounts import Accounts
from harmone.sim import SimulatedCharger, SimulatedCpms
from harmone.store import Store


def _calls(cpms: SimulatedCpms, cpid: str) -> list[tuple[str, dict[str, Any]]]:
    return [(a, p) for a, p in cpms.calls[cpid] if a != "Heartbeat"]


async def test_16_outage_is_replayed_in_order_with_transaction_ids_reconciled(
    tmp_path: Path,
) -> None:
    cpms = SimulatedCpms(transaction_id_start=9000)
    await cpms.start()
    try:
        async with harmone_server(tmp_path) as srv:
            site, url = await make_site(srv, cpms.url)
            async with SimulatedCharger(url, "J16", "1.6") as sim:
                await sim.boot()
                await cpms.stop()  # the CPMS goes away for a while
                await wait_for(
                    lambda: not srv.runtime.hub.live[(site.uid, "J16")].upstream_connected
                )
                await sim.status(1, "Preparing")
                await sim.status(1, "Charging")  # only this latest status must be replayed
                local_tx = await sim.start_transaction(1, "TAG-OFF")
                await sim.meter_values(1, 1000.0, [16.0, 16.0, 16.0])
                await sim.meter_values(1, 2000.0, [16.0, 16.0, 16.0])
                assert isinstance(local_tx, int)
                before = len(_calls(cpms, "J16"))
                await cpms.start()  # back, same port
                await wait_for(
                    lambda: srv.runtime.hub.live[(site.uid, "J16")].upstream_connected, 10
                )
                replayed = _calls(cpms, "J16")[before:]
                assert [a for a, _ in replayed] == [
                    "StatusNotification",
                    "StartTransaction",
                    "MeterValues",
                    "MeterValues",
                ]
                assert replayed[0][1]["status"] == "Charging"
                cpms_tx = 9000
                assert all(p["transactionId"] == cpms_tx for a, p in replayed if a == "MeterValues")
                # live traffic after the replay: the charger's own id is mapped both ways
                await sim.meter_values(1, 3000.0, [10.0, 10.0, 10.0])
                await wait_for(lambda: sum(a == "MeterValues" for a, _ in cpms.calls["J16"]) == 3)
                assert cpms.calls["J16"][-1][1]["transactionId"] == cpms_tx
                result = await cpms.call(
                    "J16", call16.RemoteStopTransaction(transaction_id=cpms_tx)
                )
                assert result.status == "Accepted"
                remote = [p for a, p in sim.received_calls if a == "RemoteStopTransaction"]
                assert remote[-1]["transactionId"] == local_tx
                # the charger stops on the remote request; its stop carries the CPMS's id
                await cpms.wait_for("J16", lambda a, p: a == "StopTransaction", 5)
                stop = [p for a, p in cpms.calls["J16"] if a == "StopTransaction"]
                assert len(stop) == 1 and stop[0]["transactionId"] == cpms_tx
                assert srv.runtime.hub.links[(site.uid, "J16")].session.tx_to_cpms == {}
                # replayed answers never reached the charger: it saw one answer per call
                answered = [json.loads(f)[1] for f in sim.raw_frames if json.loads(f)[0] == 3]
                assert len(answered) == len(set(answered))
                assert not any(i.startswith("hm-r-") for i in answered)
            assert await _journal_counts(srv, site.uid) == {}  # nothing left behind
    finally:
        await cpms.stop()


async def _journal_counts(srv: Any, site_uid: str) -> dict[str, int]:
    from harmone.store.journal import JournalRepo

    return await JournalRepo(srv.runtime.store).count(site_uid)


async def test_201_transaction_events_are_replayed_byte_exact(tmp_path: Path) -> None:
    cpms = SimulatedCpms()
    await cpms.start()
    try:
        async with harmone_server(tmp_path) as srv:
            site, url = await make_site(srv, cpms.url)
            async with SimulatedCharger(url, "J201", "2.0.1") as sim:
                await sim.boot()
                await cpms.stop()
                await wait_for(
                    lambda: not srv.runtime.hub.live[(site.uid, "J201")].upstream_connected
                )
                await sim.start_transaction(1, "TAG")
                await sim.meter_values(1, 500.0, 16.0)
                await sim.stop_transaction(1, wh=900.0)
                # the exact texts the charger sent, as HARMON-E received them
                sent = [
                    f.text
                    for f in srv.runtime.hub.frames(site.uid, "J201")
                    if f.sender == "charger" and '"TransactionEvent"' in f.text
                ]
                assert len(sent) == 3
                before = len(cpms.raw_frames["J201"])
                await cpms.start()
                await wait_for(
                    lambda: (
                        len(
                            [f for f in cpms.raw_frames["J201"][before:] if "TransactionEvent" in f]
                        )
                        == 3
                    ),
                    10,
                )
                got = [f for f in cpms.raw_frames["J201"][before:] if "TransactionEvent" in f]
                # same payload bytes, fresh message ids
                assert [_strip_id(f) for f in got] == [_strip_id(f) for f in sent]
                assert all(json.loads(f)[1].startswith("hm-r-") for f in got)
    finally:
        await cpms.stop()


def _strip_id(frame: str) -> str:
    return frame.split(",", 2)[2]


async def test_journal_survives_a_restart(tmp_path: Path) -> None:
    cpms = SimulatedCpms(transaction_id_start=700)
    await cpms.start()
    port = cpms.port
    await cpms.stop()
    async with harmone_server(tmp_path) as srv:
        site, url = await make_site(srv, f"ws://127.0.0.1:{port}")
        async with SimulatedCharger(url, "RS", "1.6") as sim:
            await sim.boot()
            await sim.start_transaction(1, "TAG")
    assert await _pending_after(tmp_path, site.uid) == {"RS": 2}
    cpms = SimulatedCpms(port=port, transaction_id_start=700)
    await cpms.start()
    try:
        async with harmone_server(tmp_path) as srv:
            url = f"{srv.url.replace('http', 'ws', 1)}/{site.uid}"
            async with SimulatedCharger(url, "RS", "1.6"):
                await cpms.wait_for("RS", lambda a, p: a == "StartTransaction", 10)
                assert [a for a, _ in _calls(cpms, "RS")][:2] == [
                    "BootNotification",
                    "StartTransaction",
                ]
                await wait_for(
                    lambda: srv.runtime.hub.live[(site.uid, "RS")].upstream_connected, 10
                )
            assert await _journal_counts(srv, site.uid) == {}
    finally:
        await cpms.stop()


async def _pending_after(tmp_path: Path, site_uid: str) -> dict[str, int]:
    async with harmone_server(tmp_path) as srv:
        return await _journal_counts(srv, site_uid)


async def test_strict_mode_refuses_without_cpms_and_closes_on_loss(tmp_path: Path) -> None:
    cpms = SimulatedCpms()
    await cpms.start()
    try:
        async with harmone_server(tmp_path) as srv:
            site, url = await make_site(srv, cpms.url)
            await srv.runtime.store.sites.update(site.uid, offline_mode="strict")
            async with SimulatedCharger(url, "ST", "1.6") as sim:
                await sim.boot()
                await cpms.stop()
                await sim.wait_closed(10)
                assert sim.websocket is not None and sim.websocket.close_code == 1012
            with pytest.raises(InvalidStatus) as info:
                await SimulatedCharger(url, "ST", "1.6").connect()
            assert info.value.response.status_code == 503
            await srv.runtime.hub.flush_attempts()
            log = await srv.runtime.store.attempts.of_site(site.uid)
            assert "strict" in (log[0].reason or "")
    finally:
        await cpms.stop()


async def test_offline_mode_is_in_the_site_api(tmp_path: Path) -> None:
    async with harmone_server(tmp_path) as srv:
        await Accounts(srv.runtime.store).create_user(
            "a@example.com", "correct horse battery", "admin"
        )
        token = await Accounts(srv.runtime.store).create_token("a@example.com")
        async with httpx.AsyncClient(
            base_url=srv.url, headers={"Authorization": f"Bearer {token}"}
        ) as api:
            r = await api.post("/api/v1/sites", json={"name": "S", "type": "cloud"})
            assert r.json()["offline_mode"] == "hold"
            r = await api.patch(f"/api/v1/sites/{r.json()['uid']}", json={"offline_mode": "strict"})
            assert r.json()["offline_mode"] == "strict"
            r = await api.patch(
                f"/api/v1/sites/{r.json()['uid']}", json={"offline_mode": "sometimes"}
            )
            assert r.status_code == 422
    await asyncio.sleep(0)


async def _serve(db: str, port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harmone",
        "serve",
        "--db",
        db,
        "--port",
        str(port),
        "--upstream-connect-timeout",
        "0.5",
        "--backoff-max",
        "1",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert line, "serve exited before it was ready"
        if "cloud OCPP URLs start with" in line:
            break
    # keep draining stderr so the process never blocks on a full pipe
    asyncio.get_running_loop().create_task(_drain(proc))
    return proc


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stderr is not None
    while await proc.stderr.readline():
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_kill_9_loses_nothing_that_was_answered(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k9.db'}"
    port = _free_port()
    cpms = SimulatedCpms(transaction_id_start=4242)
    await cpms.start()
    cpms_port = cpms.port
    await cpms.stop()
    proc = await _serve(db, port)
    try:
        store = await Store.open(db)
        try:
            site = await store.sites.create("K", "cloud", cpms_url=f"ws://127.0.0.1:{cpms_port}")
        finally:
            await store.close()
        url = f"ws://127.0.0.1:{port}/{site.uid}"
        sim = SimulatedCharger(url, "K9", "1.6")
        await sim.connect()
        await sim.boot()
        local_tx = await sim.start_transaction(1, "TAG")  # answered by HARMON-E: journaled
        await sim.meter_values(1, 1234.0, 10.0)
        proc.kill()  # SIGKILL: no clean shutdown, no flush
        await proc.wait()
        await sim.wait_closed(10)
        await sim.close()
        proc = await _serve(db, port)
        cpms = SimulatedCpms(port=cpms_port, transaction_id_start=4242)
        await cpms.start()
        async with SimulatedCharger(url, "K9", "1.6"):
            await cpms.wait_for("K9", lambda a, p: a == "MeterValues", 15)
            actions = [a for a, _ in _calls(cpms, "K9")]
            assert actions[:3] == ["BootNotification", "StartTransaction", "MeterValues"]
            assert actions.count("StartTransaction") == 1  # nothing duplicated
            meter = next(p for a, p in cpms.calls["K9"] if a == "MeterValues")
            assert meter["transactionId"] == 4242 != local_tx
    finally:
        proc.kill()
        await proc.wait()
        await cpms.stop()


async def test_a_journal_write_failure_makes_the_charger_resend(tmp_path: Path) -> None:
    from harmone.errors import StoreError
    from harmone.store.journal import JournalRepo

    class BrokenJournal(JournalRepo):
        async def append(self, *args: Any, **kwargs: Any) -> Any:
            raise StoreError("disk full (test)")

    cpms = SimulatedCpms()
    await cpms.start()
    port = cpms.port
    await cpms.stop()
    async with harmone_server(tmp_path) as srv:
        _, url = await make_site(srv, f"ws://127.0.0.1:{port}")
        assert srv.app.endpoint is not None
        srv.app.endpoint.journal = BrokenJournal(srv.runtime.store)
        async with websockets.connect(f"{url}/BJ", subprotocols=[Subprotocol("ocpp1.6")]) as ws:
            await ws.send(
                '[2,"s1","StartTransaction",{"connectorId":1,"idTag":"T",'
                '"meterStart":0,"timestamp":"2026-11-24T10:00:00Z"}]'
            )
            answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert answer[:3] == [4, "s1", "InternalError"]  # not an answer: resend it later
            await ws.send('[2,"h1","Heartbeat",{}]')  # not journaled: answered as usual
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))[:2] == [3, "h1"]
