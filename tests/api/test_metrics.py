"""Prometheus metrics over real sockets: a running HARMON-E, chargers and CPMSes on 127.0.0.1,
and `/metrics` scraped and parsed the way Prometheus reads it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_support import api_client, cheap_passwords, signed_in
from prometheus_client.parser import text_string_to_metric_families
from support import (
    PATIENCE,
    RawCpms,
    charger,
    harmone_server,
    make_site,
    recv_json,
)
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

import harmone
from harmone.config import parse_listen
from harmone.errors import ConfigError
from harmone.loadmgmt.timing import Timing
from harmone.services.accounts import Accounts
from harmone.web.serve import RunningServer

Labels = tuple[tuple[str, str], ...]


@pytest.fixture(autouse=True)
def _cheap_passwords() -> Iterator[None]:
    with cheap_passwords():
        yield


def parse(text: str) -> dict[str, dict[Labels, float]]:
    """Every sample of a scrape: name -> {sorted labels: value}."""
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            out.setdefault(sample.name, {})[labels] = sample.value
    return out


def value(samples: dict[str, dict[Labels, float]], name: str, **labels: str) -> float:
    """One sample's value; 0 when the series is not there (as PromQL's `or vector(0)`)."""
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


class Scraper:
    """Scrapes /metrics on the API port with an admin's API token."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def __call__(self) -> dict[str, dict[Labels, float]]:
        r = await self.client.get("/metrics")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        return parse(r.text)

    async def until(self, check: Any, timeout: float = PATIENCE) -> dict[str, dict[Labels, float]]:
        """Scrape until `check(samples)` holds (the relay counts as frames pass)."""
        end = asyncio.get_running_loop().time() + timeout
        while True:
            samples = await self()
            if check(samples):
                return samples
            if asyncio.get_running_loop().time() > end:
                raise AssertionError(f"metrics never matched; last scrape: {samples}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with harmone_server(tmp_path) as server:
        yield server


@pytest.fixture
async def scrape(srv: RunningServer) -> AsyncIterator[Scraper]:
    await Accounts(srv.runtime.store).create_account("ops@example.com", "pw-ops-12345", "admin")
    async with await api_client(srv, "ops@example.com") as client:
        yield Scraper(client)


async def test_chargers_connected_and_cpms_links_up_per_site(
    srv: RunningServer, scrape: Scraper
) -> None:
    async with RawCpms() as cpms:
        x, x_url = await make_site(srv, cpms.url, "X")
        y, y_url = await make_site(srv, None, "Y")  # HARMON-E answers its chargers itself
        before = await scrape()
        assert value(before, "harmone_chargers_connected", site=x.uid) == 0
        async with (
            await charger(f"{x_url}/CP-1"),
            await charger(f"{x_url}/CP-2") as second,
            await charger(f"{y_url}/CP-3"),
        ):
            samples = await scrape()
            assert value(samples, "harmone_chargers_connected", site=x.uid) == 2
            assert value(samples, "harmone_cpms_links_up", site=x.uid) == 2
            assert value(samples, "harmone_chargers_connected", site=y.uid) == 1
            assert value(samples, "harmone_cpms_links_up", site=y.uid) == 0
            assert value(samples, "harmone_handshakes_accepted_total") == 3
            await second.close()
            await scrape.until(
                lambda s: (
                    value(s, "harmone_chargers_connected", site=x.uid) == 1
                    and value(s, "harmone_cpms_links_up", site=x.uid) == 1
                )
            )


async def test_frames_are_counted_per_direction_and_cpms_answers_timed(
    srv: RunningServer, scrape: Scraper
) -> None:
    async with RawCpms() as cpms:
        site, url = await make_site(srv, cpms.url)
        async with await charger(f"{url}/CP-1") as ws:
            await ws.send('[2,"warm-up","Heartbeat",{}]')
            await recv_json(ws)
            before = await scrape()
            for i in range(5):
                await ws.send(f'[2,"hb{i}","Heartbeat",{{}}]')
                assert (await recv_json(ws))[1] == f"hb{i}"
            # a call of the CPMS's, answered by the charger: one frame more each way
            await cpms.send("CP-1", '[2,"c1","GetConfiguration",{}]')
            assert (await recv_json(ws))[1] == "c1"
            await ws.send('[3,"c1",{"configurationKey":[]}]')
            await cpms.wait_for(lambda: cpms.frames["CP-1"][-1].startswith('[3,"c1"'))
            after = await scrape.until(
                lambda s: (
                    value(s, "harmone_frames_total", site=site.uid, direction="charger_to_cpms")
                    == value(
                        before, "harmone_frames_total", site=site.uid, direction="charger_to_cpms"
                    )
                    + 6
                )
            )

    def moved(direction: str) -> float:
        args = {"site": site.uid, "direction": direction}
        return value(after, "harmone_frames_total", **args) - value(
            before, "harmone_frames_total", **args
        )

    assert moved("charger_to_cpms") == 6
    assert moved("cpms_to_charger") == 6
    assert moved("charger_to_harmone") == 0
    assert moved("harmone_to_charger") == 0
    count = "harmone_cpms_call_duration_seconds_count"
    assert value(after, count, site=site.uid) - value(before, count, site=site.uid) == 5
    inf = value(after, "harmone_cpms_call_duration_seconds_bucket", site=site.uid, le="+Inf")
    assert inf == value(after, count, site=site.uid)
    assert value(after, "harmone_cpms_call_duration_seconds_sum", site=site.uid) > 0


async def test_frames_answered_by_harmone_count_as_its_own(
    srv: RunningServer, scrape: Scraper
) -> None:
    site, url = await make_site(srv, None)  # no CPMS: HARMON-E answers
    async with await charger(f"{url}/CP-1") as ws:
        for i in range(3):
            await ws.send(f'[2,"hb{i}","Heartbeat",{{}}]')
            assert (await recv_json(ws))[1] == f"hb{i}"
        samples = await scrape()
    assert (
        value(samples, "harmone_frames_total", site=site.uid, direction="charger_to_harmone") == 3
    )
    assert (
        value(samples, "harmone_frames_total", site=site.uid, direction="harmone_to_charger") == 3
    )
    assert value(samples, "harmone_frames_total", site=site.uid, direction="charger_to_cpms") == 0


async def test_refused_handshakes_count_under_their_reason(
    srv: RunningServer, scrape: Scraper
) -> None:
    async with RawCpms(refuse_status=401) as refusing:
        _, url = await make_site(srv, None)
        _, refused_url = await make_site(srv, refusing.url, "Refusing CPMS")
        attempts = [
            (f"{srv.runtime.cloud_base_url}/no-such-site/CP-1", ["ocpp1.6"]),
            (f"{url}/CP-2", ["ocpp1.5"]),
            (f"{url}/CP-2", ["ocpp1.5"]),
            (f"{url}/CP%3A3", ["ocpp1.6"]),
            (f"{refused_url}/CP-4", ["ocpp1.6"]),
        ]
        for target, protocols in attempts:
            with pytest.raises(InvalidStatus):
                await charger(target, protocols)
    samples = await scrape()
    refused = {
        dict(labels)["reason"]: n
        for labels, n in samples["harmone_handshakes_refused_total"].items()
    }
    assert refused["unknown_site"] == 1
    assert refused["unsupported_version"] == 2
    assert refused["invalid_identity"] == 1
    assert refused["cpms_refused"] == 1
    assert refused["charger_auth"] == 0  # every reason is listed, also at 0
    assert sum(refused.values()) == len(attempts)
    assert value(samples, "harmone_handshakes_accepted_total") == 0


async def test_journal_backlog_per_site(srv: RunningServer, scrape: Scraper) -> None:
    away = RawCpms()
    await away.start()
    port = away.port
    await away.stop()  # nothing listens there now: the CPMS is away
    site, url = await make_site(srv, f"ws://127.0.0.1:{port}")  # offline mode "hold"
    async with await charger(f"{url}/CP-1") as ws:
        for i, status in enumerate(("Available", "Preparing")):
            payload = {"connectorId": i + 1, "errorCode": "NoError", "status": status}
            await ws.send(json.dumps([2, f"s{i}", "StatusNotification", payload]))
            assert (await recv_json(ws))[0] == 3  # answered once journaled
        samples = await scrape()
    assert value(samples, "harmone_journal_backlog", site=site.uid) == 2
    assert value(samples, "harmone_cpms_links_up", site=site.uid) == 0


async def test_the_backlog_drains_when_the_cpms_comes_back(tmp_path: Path) -> None:
    away = RawCpms()
    await away.start()
    port = away.port
    await away.stop()
    async with harmone_server(tmp_path) as srv:
        await Accounts(srv.runtime.store).create_account("o@example.com", "pw-o-123456", "admin")
        async with await api_client(srv, "o@example.com") as client:
            scrape = Scraper(client)
            site, url = await make_site(srv, f"ws://127.0.0.1:{port}")
            async with await charger(f"{url}/CP-1") as ws:
                for i in range(1, 3):
                    payload = {"connectorId": i, "errorCode": "NoError", "status": "Available"}
                    await ws.send(json.dumps([2, f"s{i}", "StatusNotification", payload]))
                    assert (await recv_json(ws))[0] == 3
                samples = await scrape()
                assert value(samples, "harmone_journal_backlog", site=site.uid) == 2
                async with RawCpms(port=port) as back:  # the CPMS is back: replayed, in order
                    samples = await scrape.until(
                        lambda s: (
                            value(s, "harmone_journal_backlog", site=site.uid) == 0
                            and value(s, "harmone_cpms_links_up", site=site.uid) == 1
                        )
                    )
                    assert len(back.frames["CP-1"]) == 2
    replayed = value(samples, "harmone_frames_total", site=site.uid, direction="harmone_to_cpms")
    assert replayed == 2


async def test_a_charger_that_leaves_its_profile_unanswered_is_counted_and_flagged(
    tmp_path: Path,
) -> None:
    quick = Timing(answer_grace=0.2, call_timeout=0.5)
    async with harmone_server(tmp_path, load_timing=quick) as srv:
        await Accounts(srv.runtime.store).create_account("o@example.com", "pw-o-123456", "admin")
        async with await api_client(srv, "o@example.com") as client:
            scrape = Scraper(client)
            site, url = await make_site(srv, None)
            r = await client.put(f"/api/v1/sites/{site.uid}/load-management", json=LOAD_CONFIG)
            assert r.status_code == 200, r.text
            async with await charger(f"{url}/LM-3") as ws:
                await _boot(ws)
                call = await recv_json(ws)
                assert call[2] == "SetChargingProfile"  # and never answered
                samples = await scrape.until(
                    lambda s: (
                        value(
                            s, "harmone_profile_answers_total", site=site.uid, outcome="unanswered"
                        )
                        >= 1
                    )
                )
    assert value(samples, "harmone_chargers_flagged", site=site.uid, flag="no_answer") == 1


async def test_an_unauthenticated_scrape_is_refused(srv: RunningServer, scrape: Scraper) -> None:
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as anonymous:
        r = await anonymous.get("/metrics")
        assert r.status_code == 401
        assert "API token" in r.json()["detail"]
        r = await anonymous.get("/metrics", headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401
    assert value(await scrape(), "harmone_info", version=harmone.__version__) == 1


async def test_a_console_session_may_scrape_but_a_user_of_some_sites_may_not(
    srv: RunningServer,
) -> None:
    site, _ = await make_site(srv, None)
    viewer = await signed_in(srv, "viewer@example.com", "viewer")
    async with viewer:
        r = await viewer.get("/metrics")
        assert r.status_code == 200
        assert value(parse(r.text), "harmone_chargers_connected", site=site.uid) == 0
    await Accounts(srv.runtime.store).create_account(
        "some@example.com", "pw-some-12345", "viewer", [site.uid]
    )
    async with await api_client(srv, "some@example.com") as restricted:
        r = await restricted.get("/metrics")
        assert r.status_code == 403
        assert "every site" in r.json()["detail"]


async def test_the_metrics_listener_serves_without_authentication(tmp_path: Path) -> None:
    async with harmone_server(tmp_path, metrics_listen=("127.0.0.1", 0)) as srv:
        site, url = await make_site(srv, None)
        assert srv.metrics_url is not None and srv.metrics_url != srv.url
        async with httpx.AsyncClient(base_url=srv.metrics_url, timeout=10) as prometheus:
            async with await charger(f"{url}/CP-1"):
                r = await prometheus.get("/metrics")
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
                assert value(parse(r.text), "harmone_chargers_connected", site=site.uid) == 1
            assert (await prometheus.get("/")).status_code == 404
            assert (await prometheus.get("/api/v1/sites")).status_code == 404  # metrics only
            assert (await prometheus.post("/metrics")).status_code == 405
        # the API port still wants a token
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as anonymous:
            assert (await anonymous.get("/metrics")).status_code == 401


async def test_metrics_listen_is_off_unless_asked_for(srv: RunningServer) -> None:
    assert srv.metrics_url is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("metrics.internal:0", ("metrics.internal", 0)),
    ],
)
def test_metrics_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9100", ":9100", "host:", "host:port", "host:70000"])
def test_metrics_listen_needs_a_host_and_a_port(text: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_listen(text)


LOAD_CONFIG: dict[str, Any] = {
    "policy": "equal_share",
    "resend_step": 0.5,
    "min_interval": 0,
    "tree": {"id": "grid", "max_current": 32},
    "default_charger": {"max_current": 32, "phases": 3},
}


async def _boot(ws: ClientConnection) -> None:
    await ws.send('[2,"b1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]')
    assert (await recv_json(ws))[1] == "b1"
    await ws.send(
        '[2,"s1","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Available"}]'
    )
    assert (await recv_json(ws))[1] == "s1"


async def test_allocation_rounds_and_a_rejected_profile_are_counted(
    srv: RunningServer, scrape: Scraper
) -> None:
    site, url = await make_site(srv, None)
    r = await scrape.client.put(f"/api/v1/sites/{site.uid}/load-management", json=LOAD_CONFIG)
    assert r.status_code == 200, r.text
    before = await scrape()
    async with await charger(f"{url}/LM-1") as ws:
        await _boot(ws)
        # load management sends its TxDefaultProfile; this charger refuses it
        call = await recv_json(ws)
        assert call[0] == 2 and call[2] == "SetChargingProfile"
        await ws.send(json.dumps([3, call[1], {"status": "Rejected"}]))
        samples = await scrape.until(
            lambda s: (
                value(s, "harmone_profile_answers_total", site=site.uid, outcome="rejected") == 1
            )
        )
    rounds = value(samples, "harmone_allocation_rounds_total", site=site.uid)
    assert rounds > value(before, "harmone_allocation_rounds_total", site=site.uid)
    duration = "harmone_allocation_duration_seconds_count"
    assert value(samples, duration, site=site.uid) == rounds
    assert value(samples, "harmone_profiles_sent_total", site=site.uid) >= 1
    assert value(samples, "harmone_profile_answers_total", site=site.uid, outcome="accepted") == 0
    assert value(samples, "harmone_chargers_flagged", site=site.uid, flag="rejected") == 1
    assert value(samples, "harmone_allocation_failures_total", site=site.uid) == 0


async def test_an_accepted_profile_is_counted_and_nothing_flagged(
    srv: RunningServer, scrape: Scraper
) -> None:
    site, url = await make_site(srv, None)
    r = await scrape.client.put(f"/api/v1/sites/{site.uid}/load-management", json=LOAD_CONFIG)
    assert r.status_code == 200, r.text
    async with await charger(f"{url}/LM-2") as ws:
        await _boot(ws)
        call = await recv_json(ws)
        assert call[2] == "SetChargingProfile"
        await ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))
        samples = await scrape.until(
            lambda s: (
                value(s, "harmone_profile_answers_total", site=site.uid, outcome="accepted") == 1
            )
        )
    assert value(samples, "harmone_chargers_flagged", site=site.uid, flag="rejected") == 0


async def test_each_application_has_its_own_numbers(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        harmone_server(tmp_path / "a") as a,
        harmone_server(tmp_path / "b") as b,
    ):
        site, url = await make_site(a, None)
        async with await charger(f"{url}/CP-1"):
            seen_a = parse((await a.runtime.metrics.scrape()).decode())
            seen_b = parse((await b.runtime.metrics.scrape()).decode())
    assert value(seen_a, "harmone_chargers_connected", site=site.uid) == 1
    assert value(seen_b, "harmone_handshakes_accepted_total") == 0
    assert "harmone_handshakes_accepted_total" in seen_b


async def test_harmone_serve_takes_the_metrics_address_from_its_environment(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'h.db'}"
    env = {**os.environ, "HARMONE_METRICS_LISTEN": "127.0.0.1:0"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harmone",
        "serve",
        "--db",
        db,
        "--port",
        "0",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        metrics_url = None
        while metrics_url is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), PATIENCE)).decode()
            assert line, "serve exited before it was ready"
            found = re.search(r"Prometheus metrics also at (http://\S+/metrics)", line)
            metrics_url = found.group(1) if found else None
        async with httpx.AsyncClient(timeout=10) as prometheus:
            r = await prometheus.get(metrics_url)
            end = asyncio.get_running_loop().time() + PATIENCE
            # the listener may answer before start-up is over: 503 "HARMON-E is starting"
            while r.status_code == 503 and asyncio.get_running_loop().time() < end:
                await asyncio.sleep(0.05)
                r = await prometheus.get(metrics_url)
        assert r.status_code == 200
        assert value(parse(r.text), "harmone_handshakes_accepted_total") == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), PATIENCE)
    assert proc.returncode == 0


async def test_a_bad_metrics_address_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harmone",
        "serve",
        "--db",
        f"sqlite:///{tmp_path / 'h.db'}",
        "--metrics-listen",
        "9100",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), PATIENCE)
    assert proc.returncode == 2
    assert err.decode().strip().splitlines() == [
        "harmone: error: --metrics-listen must be HOST:PORT, e.g. 127.0.0.1:9100 or "
        "[::1]:9100, got '9100'"
    ]
