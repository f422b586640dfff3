"""Configuring a secondary CPMS (issue 14): the REST API, its OpenAPI document, the console's
forms, and what a change does to connected chargers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from console_support import PASSWORD, api_client, cheap_passwords, signed_in
from secondary_support import ScriptedCpms
from support import charger, harmone_server, recv_json, wait_for

from harmone.services.accounts import Accounts
from harmone.web.serve import RunningServer


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[RunningServer]:
    with cheap_passwords():
        async with harmone_server(tmp_path) as server:
            yield server


@pytest.fixture
async def api(srv: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    await Accounts(srv.runtime.store).create_account("admin@example.com", PASSWORD, "admin")
    async with await api_client(srv, "admin@example.com") as client:
        yield client


async def test_site_fields_over_the_api(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/api/v1/sites",
        json={"name": "Depot", "type": "cloud", "secondary_cpms_url": "wss://mon.example.com/o/"},
    )
    assert r.status_code == 201, r.text
    site = r.json()
    assert site["secondary_cpms_url"] == "wss://mon.example.com/o"
    assert site["secondary_rule"] == "read-only"
    uid = site["uid"]

    rule = {"mode": "allow", "actions": ["GetConfiguration", "Reset", "Reset"]}
    r = await api.patch(f"/api/v1/sites/{uid}", json={"secondary_rule": rule})
    assert r.status_code == 200 and r.json()["secondary_rule"] == "allow:GetConfiguration,Reset"
    r = await api.patch(
        f"/api/v1/sites/{uid}", json={"secondary_rule": "deny: Reset , UpdateFirmware"}
    )
    assert r.json()["secondary_rule"] == "deny:Reset,UpdateFirmware"
    assert (await api.get(f"/api/v1/sites/{uid}")).json()["secondary_rule"] == (
        "deny:Reset,UpdateFirmware"
    )

    for bad, words in [
        ({"secondary_rule": "write-all"}, "secondary_rule"),
        ({"secondary_rule": "allow:Rest"}, "'Rest' is not an action"),
        ({"secondary_rule": {"mode": "read-only", "actions": ["Reset"]}}, "no action list"),
        ({"secondary_rule": {"mode": "allow", "verbs": []}}, "unknown keys: verbs"),
        ({"secondary_cpms_url": "http://x"}, "secondary_cpms_url must start with ws://"),
    ]:
        r = await api.patch(f"/api/v1/sites/{uid}", json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert words in r.json()["detail"], (bad, r.json())

    r = await api.patch(f"/api/v1/sites/{uid}", json={"secondary_cpms_url": None})
    assert r.json()["secondary_cpms_url"] is None


async def test_openapi_lists_the_fields(api: httpx.AsyncClient) -> None:
    schemas = (await api.get("/api/v1/openapi.json")).json()["components"]["schemas"]
    for name in ("SiteIn", "SitePatch", "SiteOut"):
        assert {"secondary_cpms_url", "secondary_rule"} <= set(schemas[name]["properties"]), name
    assert "secondary_cpms_url" in schemas["ChargerPatch"]["properties"]
    out = set(schemas["ChargerOut"]["properties"])
    assert {"effective_secondary_cpms_url", "secondary_connected", "secondary_error"} <= out


async def test_a_charger_override_and_reconnects(
    srv: RunningServer, api: httpx.AsyncClient
) -> None:
    async with ScriptedCpms() as primary, ScriptedCpms() as first, ScriptedCpms() as second:
        r = await api.post(
            "/api/v1/sites",
            json={
                "name": "D",
                "type": "cloud",
                "cpms_url": primary.url,
                "secondary_cpms_url": first.url,
            },
        )
        uid = r.json()["uid"]
        url = r.json()["ocpp_url"]
        async with await charger(f"{url}/CP1") as ws:
            await wait_for(lambda: "CP1" in first.conns)
            got = (await api.get(f"/api/v1/sites/{uid}/chargers/CP1")).json()
            assert got["effective_secondary_cpms_url"] == first.url
            assert got["secondary_cpms_url"] is None
            await wait_for(
                lambda: bool(
                    (live := srv.runtime.hub.live_state(uid, "CP1")) and live.secondary_connected
                )
            )
            got = (await api.get(f"/api/v1/sites/{uid}/chargers/CP1")).json()
            assert got["secondary_connected"] is True and got["secondary_error"] is None

            # a rule change keeps the charger; its own secondary reconnects it
            r = await api.patch(f"/api/v1/sites/{uid}", json={"secondary_rule": "allow:"})
            assert r.status_code == 200
            r = await api.patch(
                f"/api/v1/sites/{uid}/chargers/CP1", json={"secondary_cpms_url": second.url}
            )
            assert r.status_code == 200 and r.json()["effective_secondary_cpms_url"] == second.url
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv_json(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        async with await charger(f"{url}/CP1"):
            await wait_for(lambda: "CP1" in second.conns)
            # the site's secondary changes: a charger with its own keeps its link
            r = await api.patch(f"/api/v1/sites/{uid}", json={"secondary_cpms_url": None})
            assert r.status_code == 200
            assert srv.runtime.hub.link(uid, "CP1") is not None
            assert not srv.runtime.hub.link(uid, "CP1").closed.is_set()  # type: ignore[union-attr]


async def test_console_forms(srv: RunningServer) -> None:
    site = await srv.runtime.store.sites.create("Depot", "cloud")
    async with await signed_in(srv, "op@example.com", "operator") as op:
        page = (await op.get(f"/sites/{site.uid}/settings")).text
        assert 'name="secondary_cpms_url"' in page and 'value="read-only"' in page
        form = {"name": "Depot", "type": "cloud", "cpms_url": ""}
        r = await op.post(
            f"/sites/{site.uid}/settings",
            {**form, "secondary_cpms_url": "ws://mon.example.com", "secondary_rule": "allow:Reset"},
        )
        assert r.status_code == 303, r.text
        stored = await srv.runtime.store.sites.get(site.uid)
        assert (stored.secondary_cpms_url, stored.secondary_rule) == (
            "ws://mon.example.com",
            "allow:Reset",
        )
        r = await op.post(
            f"/sites/{site.uid}/settings",
            {**form, "secondary_cpms_url": "", "secondary_rule": "allow:Nothing"},
        )
        assert r.status_code == 422 and "is not an action of OCPP" in r.text
        hub = (await op.get(f"/sites/{site.uid}/control-hub")).text
        assert "secondary CPMS at" in hub and "ws://mon.example.com" in hub
        # a form without the fields (an older page) leaves them as they are
        r = await op.post(f"/sites/{site.uid}/settings", form)
        assert r.status_code == 303
        stored = await srv.runtime.store.sites.get(site.uid)
        assert stored.secondary_rule == "allow:Reset"

        await srv.runtime.store.chargers.register(site.uid, "CP1")
        page = (await op.get(f"/sites/{site.uid}/chargers/CP1")).text
        assert 'name="secondary_cpms_url"' in page
        r = await op.post(
            f"/sites/{site.uid}/chargers/CP1",
            {
                "name": "",
                "cpms_mode": "site",
                "cpms_url": "",
                "secondary_cpms_url": "wss://v.example",
            },
        )
        assert r.status_code == 303, r.text
        got = await srv.runtime.store.chargers.get(site.uid, "CP1")
        assert got.secondary_cpms_url == "wss://v.example"
        page = (await op.get(f"/sites/{site.uid}/chargers/CP1")).text
        assert "Secondary CPMS" in page and "wss://v.example" in page
