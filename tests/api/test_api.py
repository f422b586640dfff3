"""The REST API over real HTTP on 127.0.0.1, with chargers connected to the OCPP endpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from support import (
    ON_SHARED_SERVER,
    RawCpms,
    charger,
    client_for,
    harmone_server,
    recv_json,
    wait_for,
)

from harmone.services.accounts import Accounts
from harmone.store.sites import SITE_UID_BITS, new_site_uid
from harmone.web.serve import RunningServer

SERVER_OPTIONS = {"public_url": "wss://ocpp.example.com"}


async def test_sites_lifecycle_and_ocpp_urls(srv: RunningServer) -> None:
    async with await client_for(srv) as api:
        r = await api.post("/api/v1/sites", json={"name": "Car park", "type": "cloud"})
        assert r.status_code == 201, r.text
        cloud = r.json()
        assert cloud["ocpp_url"] == f"wss://ocpp.example.com/{cloud['uid']}"
        assert len(cloud["uid"]) >= 22 and cloud["cpms_url"] is None
        r = await api.post(
            "/api/v1/sites",
            json={
                "name": "Depot",
                "type": "gateway",
                "gateway_host": "192.168.1.10",
                "cpms_url": "wss://cpms.example.com/ocpp/",
            },
        )
        gw = r.json()
        assert gw["ocpp_url"] == f"wss://192.168.1.10/{gw['uid']}"
        assert gw["cpms_url"] == "wss://cpms.example.com/ocpp"
        assert {s["uid"] for s in (await api.get("/api/v1/sites")).json()} == {
            cloud["uid"],
            gw["uid"],
        }
        r = await api.patch(
            f"/api/v1/sites/{cloud['uid']}",
            json={"name": "Car park B", "cpms_url": "ws://127.0.0.1:9/x"},
        )
        assert r.json()["name"] == "Car park B" and r.json()["cpms_url"] == "ws://127.0.0.1:9/x"
        assert (await api.get(f"/api/v1/sites/{cloud['uid']}")).json()["name"] == "Car park B"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"name": "", "type": "cloud"}, "name"),
        ({"name": "x", "type": "roof"}, "type"),
        ({"name": "x", "type": "gateway"}, "gateway_host"),
        ({"name": "x", "type": "gateway", "gateway_host": "http://1.2.3.4/"}, "not a URL"),
        ({"name": "x", "type": "cloud", "cpms_url": "https://cpms"}, "ws://"),
        ({"name": "x", "type": "cloud", "colour": "red"}, "colour"),
    ],
)
@ON_SHARED_SERVER
async def test_bad_site_input_gets_a_4xx_with_a_readable_detail(
    shared_admin: httpx.AsyncClient, body: dict[str, object], detail: str
) -> None:
    # one server for the table: only refused input reaches it, so it never has a site
    api = shared_admin
    r = await api.post("/api/v1/sites", json=body)
    assert 400 <= r.status_code < 500
    assert isinstance(r.json()["detail"], str) and detail in r.json()["detail"]
    assert (await api.get("/api/v1/sites")).json() == []


async def test_site_rules_answer_422_naming_the_field(srv: RunningServer) -> None:
    """The domain's rules, for a new site and for a change, come back as the field's name and
    the rule, whichever layer applied them."""
    gateway_rule = "gateway_host: a gateway site needs the box's LAN address"
    async with await client_for(srv) as api:
        r = await api.post("/api/v1/sites", json={"name": "x", "type": "gateway"})
        assert (r.status_code, r.json()) == (422, {"detail": gateway_rule})
        r = await api.post("/api/v1/sites", json={"name": "Depot", "type": "cloud"})
        uid = r.json()["uid"]
        # The rule spans fields: a cloud site becoming a gateway needs a gateway_host too.
        r = await api.patch(f"/api/v1/sites/{uid}", json={"type": "gateway"})
        assert (r.status_code, r.json()) == (422, {"detail": gateway_rule})
        r = await api.patch(
            f"/api/v1/sites/{uid}", json={"type": "gateway", "gateway_host": "10.0.0.9"}
        )
        assert r.status_code == 200 and r.json()["ocpp_url"] == f"wss://10.0.0.9/{uid}"
        r = await api.patch(f"/api/v1/sites/{uid}", json={"gateway_host": None})
        assert (r.status_code, r.json()) == (422, {"detail": gateway_rule})
        r = await api.patch(f"/api/v1/sites/{uid}", json={"name": None})
        assert r.status_code == 422 and r.json()["detail"].startswith("name: ")
        r = await api.patch(f"/api/v1/sites/{uid}", json={"offline_mode": "lax"})
        assert r.status_code == 422 and r.json()["detail"].startswith("offline_mode: ")
        site = (await api.get(f"/api/v1/sites/{uid}")).json()
        assert (site["name"], site["type"], site["gateway_host"]) == (
            "Depot",
            "gateway",
            "10.0.0.9",
        )


async def test_broken_json_and_unknown_objects(srv: RunningServer) -> None:
    async with await client_for(srv) as api:
        r = await api.post(
            "/api/v1/sites", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422 and "JSON" in r.json()["detail"]
        r = await api.get("/api/v1/sites/does-not-exist")
        assert r.status_code == 404 and "does-not-exist" in r.json()["detail"]
        r = await api.get("/api/v1/sites/does-not-exist/chargers")
        assert r.status_code == 404


async def test_authentication_and_roles(srv: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=srv.url) as anon:
        r = await anon.get("/api/v1/sites")
        assert r.status_code == 401 and "token" in r.json()["detail"]
        r = await anon.get("/api/v1/sites", headers={"Authorization": "Bearer hm_bad_token"})
        assert r.status_code == 401
        assert (await anon.get("/api/v1/openapi.json")).json()["info"]["title"] == "HARMON-E"
    async with await client_for(srv, "viewer") as viewer:
        assert (await viewer.get("/api/v1/sites")).status_code == 200
        r = await viewer.post("/api/v1/sites", json={"name": "x", "type": "cloud"})
        assert r.status_code == 403
    async with await client_for(srv, "operator") as op:
        assert (
            await op.post("/api/v1/sites", json={"name": "x", "type": "cloud"})
        ).status_code == 201


async def test_chargers_registry_follows_the_traffic(srv: RunningServer) -> None:
    async with RawCpms() as cpms, await client_for(srv) as api:
        site = (
            await api.post(
                "/api/v1/sites", json={"name": "S", "type": "cloud", "cpms_url": cpms.url}
            )
        ).json()
        # the public URL is for real chargers; the test connects to the listening address
        url = f"{srv.url.replace('http', 'ws', 1)}/{site['uid']}"
        before = datetime.now(UTC)
        async with await charger(f"{url}/CP-A", ["ocpp1.6"]) as ws:
            await ws.send(
                json.dumps(
                    [
                        2,
                        "1",
                        "BootNotification",
                        {
                            "chargePointVendor": "ACME",
                            "chargePointModel": "Wallbox 22",
                            "chargePointSerialNumber": "SN-1",
                            "firmwareVersion": "4.2",
                        },
                    ]
                )
            )
            await recv_json(ws)
            await ws.send(
                json.dumps(
                    [
                        2,
                        "2",
                        "StatusNotification",
                        {"connectorId": 1, "errorCode": "NoError", "status": "Charging"},
                    ]
                )
            )
            await recv_json(ws)
            r = await api.get(f"/api/v1/sites/{site['uid']}/chargers")
            (c,) = r.json()
            assert c["id"] == "CP-A" and c["connected"] is True
            assert (c["vendor"], c["model"], c["serial_number"], c["firmware_version"]) == (
                "ACME",
                "Wallbox 22",
                "SN-1",
                "4.2",
            )
            assert c["ocpp_version"] == "1.6" and c["upstream_connected"] is True
            assert c["connectors"] == [
                {"id": 1, "status": "Charging", "updated_at": c["connectors"][0]["updated_at"]}
            ]
            assert datetime.fromisoformat(c["last_seen"]) >= before
            assert c["cpms_url"] is None and c["effective_cpms_url"] == cpms.url
            frames = (await api.get(f"/api/v1/sites/{site['uid']}/chargers/CP-A/frames")).json()
            assert [f["sender"] for f in frames][:2] == ["charger", "cpms"]
            assert "BootNotification" in frames[0]["text"]
        await wait_for(lambda: not srv.runtime.hub.links)
        c = (await api.get(f"/api/v1/sites/{site['uid']}/chargers/CP-A")).json()
        assert c["connected"] is False and c["upstream_connected"] is False
        log = (await api.get(f"/api/v1/sites/{site['uid']}/connection-log")).json()
        assert log[0]["accepted"] is True and log[0]["reason"] is None
        assert log[0]["charge_point_id"] == "CP-A" and log[0]["remote_addr"] == "127.0.0.1"


async def test_charger_cpms_override_reconnects_it_through_the_new_cpms(
    srv: RunningServer,
) -> None:
    async with RawCpms() as old, RawCpms() as new, await client_for(srv) as api:
        site = (
            await api.post(
                "/api/v1/sites", json={"name": "S", "type": "cloud", "cpms_url": old.url}
            )
        ).json()
        url = f"{srv.url.replace('http', 'ws', 1)}/{site['uid']}"
        ws = await charger(f"{url}/CP-B")
        await wait_for(lambda: "CP-B" in old.conns)
        r = await api.patch(
            f"/api/v1/sites/{site['uid']}/chargers/CP-B",
            json={"cpms_url": new.url, "name": "Bay 2"},
        )
        assert r.status_code == 200 and r.json()["cpms_url"] == new.url
        assert r.json()["name"] == "Bay 2"
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1012
        async with await charger(f"{url}/CP-B"):
            await wait_for(lambda: "CP-B" in new.conns)
        r = await api.patch(
            f"/api/v1/sites/{site['uid']}/chargers/CP-B", json={"cpms_url": "ftp://x"}
        )
        assert r.status_code == 422


async def test_oversized_request_bodies_are_refused_before_anything_reads_them(
    srv: RunningServer,
) -> None:
    big = b'{"name": "' + b"x" * (5 << 20) + b'", "type": "cloud"}'
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as anon:
        r = await anon.post(
            "/api/v1/sites", content=big, headers={"content-type": "application/json"}
        )
        assert r.status_code == 413 and "larger than" in r.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            for _ in range(6):
                yield b"x" * (1 << 20)

        r = await anon.post(
            "/api/v1/sites", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413
    async with await client_for(srv) as api:  # ordinary requests are untouched
        assert (
            await api.post("/api/v1/sites", json={"name": "S", "type": "cloud"})
        ).status_code == 201


def test_site_uids_start_and_end_with_a_letter_or_digit() -> None:
    """A UID starting with - or _ is easily missed when read out or retyped (issue 10)."""
    uids = [new_site_uid() for _ in range(3000)]
    shape = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{22}[A-Za-z0-9]")
    assert all(shape.fullmatch(uid) for uid in uids)
    assert len(set(uids)) == len(uids)
    assert SITE_UID_BITS >= 128
    # The middle still draws from all 64 URL-safe characters.
    assert {"-", "_"} <= set("".join(uid[1:-1] for uid in uids))


async def test_sites_created_over_the_api_get_such_uids(srv: RunningServer) -> None:
    async with await client_for(srv) as api:
        for _ in range(20):
            uid = (await api.post("/api/v1/sites", json={"name": "S", "type": "cloud"})).json()[
                "uid"
            ]
            assert uid[0].isalnum() and uid[-1].isalnum() and len(uid) == 24


async def test_serving_a_database_without_an_admin_says_how_to_create_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="harmone.web.app")
    async with harmone_server(tmp_path):
        pass
    (warning,) = [r for r in caplog.records if "no admin user" in r.getMessage()]
    assert "harmone init --db URL --admin-email EMAIL" in warning.getMessage()
    async with harmone_server(tmp_path) as srv:
        await Accounts(srv.runtime.store).create_user("a@example.com", "x" * 12, "admin")
    caplog.clear()
    async with harmone_server(tmp_path):
        pass
    assert not [r for r in caplog.records if "no admin user" in r.getMessage()]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
@ON_SHARED_SERVER
async def test_non_finite_json_numbers_are_refused_for_every_body(
    shared_admin: httpx.AsyncClient, number: str
) -> None:
    """Python's JSON reads NaN and Infinity, and 1e999 as infinity: every API body refuses
    them (a NaN limit made every later allocation fail; issue 10 item 2)."""
    api = shared_admin  # one server for the table: each case works on a site of its own
    site = (await api.post("/api/v1/sites", json={"name": "S", "type": "cloud"})).json()
    tree = '{"tree": {"id": "grid", "max_current": 32}}'
    assert (
        await api.put(
            f"/api/v1/sites/{site['uid']}/load-management",
            content=tree,
            headers={"content-type": "application/json"},
        )
    ).status_code == 200
    for method, path, body in [
        ("PUT", "/load-management/nodes/grid/dynamic-limit", f'{{"limit": {number}}}'),
        ("PUT", "/load-management", tree.replace("32", number)),
        ("POST", "/load-management/nodes/grid/readings", f'{{"current": [1, 2, {number}]}}'),
        ("PATCH", "", f'{{"name": "x", "extra": [{number}]}}'),
    ]:
        r = await api.request(
            method,
            f"/api/v1/sites/{site['uid']}{path}",
            content=body,
            headers={"content-type": "application/json; charset=utf-8"},
        )
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"].startswith(f"body: {number} is not a number"), r.text
    status = (await api.get(f"/api/v1/sites/{site['uid']}/load-management/status")).json()
    assert status["dynamic_limits"] == {}
    r = await api.put(
        f"/api/v1/sites/{site['uid']}/load-management/nodes/grid/dynamic-limit",
        json={"limit": 1e300},
    )
    assert r.status_code < 500  # a finite number goes on to the handler's own rules


async def test_times_without_a_utc_offset_are_utc(srv: RunningServer) -> None:
    """`?since=2026-01-01T00:00:00` (no offset) gave a 500 once the site had samples (naive
    against aware datetimes; issue 10 item 3): it is UTC."""
    async with await client_for(srv) as api:
        uid = (await api.post("/api/v1/sites", json={"name": "S", "type": "cloud"})).json()["uid"]
        base = f"/api/v1/sites/{uid}/load-management"
        tree = {"tree": {"id": "grid", "max_current": 32, "metered": True}}
        assert (await api.put(base, json=tree)).status_code == 200
        r = await api.post(f"{base}/nodes/grid/readings", json={"current": [1, 2, 3]})
        assert r.status_code == 202, r.text
        samples: list[object] = []

        async def sampled() -> bool:
            samples[:] = (await api.get(f"{base}/timeseries")).json()
            return bool(samples)

        end = asyncio.get_running_loop().time() + 30
        while not await sampled():
            assert asyncio.get_running_loop().time() < end, "no sample"
            await asyncio.sleep(0.05)
        # More samples may come meanwhile (one per allocation round): at least those seen.
        for since, at_least in [
            ("2000-01-01T00:00:00", len(samples)),
            ("2000-01-01T00:00:00Z", len(samples)),
            ("2000-01-01T01:00:00+01:00", len(samples)),
        ]:
            r = await api.get(f"{base}/timeseries", params={"since": since})
            assert r.status_code == 200 and len(r.json()) >= at_least, (since, r.text)
        r = await api.get(f"{base}/timeseries", params={"since": "2999-01-01T00:00:00"})
        assert (r.status_code, r.json()) == (200, [])
        r = await api.get(f"{base}/timeseries", params={"since": "yesterday"})
        assert r.status_code == 422
