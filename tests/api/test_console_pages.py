"""The console's pages and live streams over real HTTP (the browser tests cover the rest)."""

from __future__ import annotations

import json

import httpx
import pytest
import websockets
from console_support import (
    BOOT,
    PASSWORD,
    ConsoleClient,
    EventReader,
    ocpp_base,
    signed_in,
)
from support import RawCpms, charger, recv_json, wait_for

from harmone.relay.state import FrameRecord
from harmone.services.accounts import Accounts
from harmone.web.console.frames import describe_frames
from harmone.web.console.render import charger_path, relative
from harmone.web.serve import RunningServer

pytestmark = pytest.mark.usefixtures("cheap_argon2")


async def test_sign_in_redirects_back_and_sign_out(srv: RunningServer) -> None:
    await Accounts(srv.runtime.store).create_account("op@example.com", PASSWORD, "operator")
    async with ConsoleClient(srv) as browser:
        r = await browser.get("/")
        assert r.headers["location"] == "/login"
        r = await browser.login("op@example.com", next_url="/sites?q=depot")
        assert r.status_code == 303 and r.headers["location"] == "/sites?q=depot"
        assert (await browser.get("/")).headers["location"] == "/sites"
        assert (await browser.get("/login")).headers["location"] == "/sites"
        page = await browser.get("/sites")
        assert "op@example.com" in page.text and "Sign out" in page.text
        r = await browser.post("/logout")
        assert r.headers["location"] == "/login?bye=1"
        assert "You are signed out." in (await browser.get("/login?bye=1")).text
        assert (await browser.get("/sites")).status_code == 303


async def test_sites_list_search_and_restriction(srv: RunningServer) -> None:
    store = srv.runtime.store
    depot = await store.sites.create("North depot", "gateway", gateway_host="10.0.0.7")
    await store.sites.create("Office car park", "cloud", cpms_url="wss://cpms.example.com/x")
    async with await signed_in(srv, "admin@example.com") as admin:
        page = (await admin.get("/sites")).text
        assert "North depot" in page and "Office car park" in page and "New site" in page
        page = (await admin.get("/sites?q=DEPOT")).text
        assert "North depot" in page and "Office car park" not in page
        assert "North depot" in (await admin.get("/sites?q=10.0.0.7")).text
        assert "Office car park" in (await admin.get("/sites?q=cpms.example")).text
        assert "No site matches" in (await admin.get("/sites?q=zzz")).text
    async with await signed_in(srv, "v@example.com", "viewer", sites=[depot.uid]) as viewer:
        page = (await viewer.get("/sites")).text
        assert "North depot" in page and "Office car park" not in page
        assert "New site" not in page and "Attempts on unknown sites" not in page
        assert (await viewer.get("/connection-log")).status_code == 403


async def test_create_site_form(srv: RunningServer) -> None:
    async with await signed_in(srv, "op@example.com", "operator") as op:
        assert "Create site" in (await op.get("/sites/new")).text
        r = await op.post("/sites", {"name": "Depot", "type": "gateway", "gateway_host": ""})
        assert r.status_code == 422 and "A gateway site needs the box&#39;s LAN address" in r.text
        r = await op.post("/sites", {"name": "Depot", "type": "cloud", "cpms_url": "https://x"})
        assert r.status_code == 422 and "Cpms_url must start with ws:// or wss://" in r.text
        r = await op.post("/sites", {"name": "", "type": "cloud"})
        assert r.status_code == 422 and 'aria-invalid="true"' in r.text
        # The service names the field; the page shows the message next to it.
        assert '<p class="field-error" id="name-error">A site name must not be empty' in r.text
        r = await op.post("/sites", {"name": "Depot", "type": "roof"})
        assert r.status_code == 422 and '<p class="field-error" id="type-error">' in r.text
        r = await op.post(
            "/sites", {"name": "Depot", "type": "gateway", "gateway_host": "192.168.1.10"}
        )
        assert r.status_code == 303
        uid = r.headers["location"].split("/")[2].split("?")[0]
        site = await srv.runtime.store.sites.get(uid)
        assert (site.name, site.type, site.gateway_host) == ("Depot", "gateway", "192.168.1.10")
        hub = await op.get(r.headers["location"])
        assert hub.status_code == 303  # /sites/{uid} -> its Control Hub
        page = (await op.get(hub.headers["location"])).text
        assert f'value="wss://192.168.1.10/{uid}"' in page and "Site created." in page
        assert "wss://{gateway-or-flexbox-IP}/{site-UID}" in page


async def test_control_hub_shows_the_latest_refused_attempt(srv: RunningServer) -> None:
    site = await srv.runtime.store.sites.create("Depot", "cloud")
    async with await signed_in(srv, "op@example.com", "operator") as op:
        with pytest.raises(websockets.InvalidStatus):
            await charger(f"{ocpp_base(srv)}/{site.uid}/CP-1", subprotocols=())
        page = (await op.get(f"/sites/{site.uid}/control-hub")).text
        assert "Latest attempt" in page and "Refused" in page and "offered no OCPP version" in page
        log = (await op.get(f"/sites/{site.uid}/connection-log")).text
        assert "CP-1" in log and "offered no OCPP version" in log


async def test_site_settings_change_reconnects_chargers(srv: RunningServer) -> None:
    async with RawCpms() as first, RawCpms() as second:
        site = await srv.runtime.store.sites.create("Depot", "cloud", cpms_url=first.url)
        async with await signed_in(srv, "op@example.com", "operator") as op:
            ws = await charger(f"{ocpp_base(srv)}/{site.uid}/CP-1")
            await wait_for(lambda: "CP-1" in first.conns)
            page = await op.get(f"/sites/{site.uid}/settings")
            assert f'value="{first.url}"' in page.text
            r = await op.post(
                f"/sites/{site.uid}/settings",
                {"name": "Depot 2", "type": "cloud", "gateway_host": "x", "cpms_url": second.url},
            )
            assert r.headers["location"] == f"/sites/{site.uid}/settings?done=saved"
            stored = await srv.runtime.store.sites.get(site.uid)
            assert (stored.name, stored.cpms_url, stored.gateway_host) == (
                "Depot 2",
                second.url,
                None,
            )
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv_json(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            r = await op.post(f"/sites/{site.uid}/settings", {"name": "Depot", "type": "gateway"})
            assert r.status_code == 422 and "LAN address" in r.text


async def test_deleting_a_site_disconnects_its_chargers_and_keeps_the_log(
    srv: RunningServer,
) -> None:
    site = await srv.runtime.store.sites.create("Doomed", "cloud")
    async with await signed_in(srv, "op@example.com", "operator") as op:
        ws = await charger(f"{ocpp_base(srv)}/{site.uid}/CP-9")
        await ws.send(BOOT)
        await recv_json(ws)
        page = (await op.get(f"/sites/{site.uid}/delete")).text
        assert "1 charging station</strong> is removed" in page
        assert "1 connected charger</strong> is disconnected" in page
        assert "connection log stays" in page
        r = await op.post(f"/sites/{site.uid}/delete")
        assert r.headers["location"] == "/sites?done=deleted"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv_json(ws)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000, "site deleted")
        assert await srv.runtime.store.sites.find(site.uid) is None
        assert "Site deleted." in (await op.get("/sites?done=deleted")).text
        assert (await op.get(f"/sites/{site.uid}/control-hub")).status_code == 404
        # The attempts stay, now under "unknown sites", and a reconnection is refused.
        with pytest.raises(websockets.InvalidStatus):
            await charger(f"{ocpp_base(srv)}/{site.uid}/CP-9")
        log = (await op.get("/connection-log")).text
        assert site.uid in log and "CP-9" in log and "no such site" in log


async def test_charging_station_page_and_settings(srv: RunningServer) -> None:
    async with RawCpms() as cpms, RawCpms() as own:
        site = await srv.runtime.store.sites.create("Depot", "cloud", cpms_url=cpms.url)
        async with await signed_in(srv, "op@example.com", "operator") as op:
            ws = await charger(f"{ocpp_base(srv)}/{site.uid}/CP%2B1")
            await ws.send(BOOT)
            await recv_json(ws)
            url = charger_path(site.uid, "CP%2B1")
            assert url.endswith("/chargers/CP%252B1")
            page = (await op.get(url)).text
            assert "ACME" in page and "Wallbox" in page and "Inherits the site" in page
            assert 'data-action="BootNotification"' in page
            assert "Changing the CPMS reconnects the charger" in page
            r = await op.post(url, {"name": "Bay 1", "cpms_mode": "own", "cpms_url": ""})
            assert r.status_code == 422 and "Enter the CPMS URL" in r.text
            r = await op.post(url, {"name": "Bay 1", "cpms_mode": "own", "cpms_url": "http://x"})
            assert r.status_code == 422 and "ws://" in r.text
            r = await op.post(url, {"name": "Bay 1", "cpms_mode": "own", "cpms_url": own.url})
            assert r.headers["location"] == f"{url}?done=reconnected"
            stored = await srv.runtime.store.chargers.get(site.uid, "CP%2B1")
            assert (stored.name, stored.cpms_url) == ("Bay 1", own.url)
            with pytest.raises(websockets.ConnectionClosed):
                await recv_json(ws)
            r = await op.post(url, {"name": "", "cpms_mode": "site", "cpms_url": own.url})
            assert r.headers["location"] == f"{url}?done=saved"  # not connected now
            stored = await srv.runtime.store.chargers.get(site.uid, "CP%2B1")
            assert (stored.name, stored.cpms_url) == (None, None)
            assert (await op.get(charger_path(site.uid, "nope"))).status_code == 404


async def test_users_pages(srv: RunningServer) -> None:
    store = srv.runtime.store
    site = await store.sites.create("Depot", "cloud")
    async with await signed_in(srv, "admin@example.com") as admin:
        r = await admin.post(
            "/users",
            {"email": "new@example.com", "password": PASSWORD, "role": "viewer", "access": "some"}
            | {"sites": [site.uid]},
        )
        assert r.headers["location"] == "/users?done=created"
        new = next(
            a for a in await Accounts(store).list_accounts() if a.user.email == "new@example.com"
        )
        assert new.user.role == "viewer" and new.sites == frozenset({site.uid})
        page = (await admin.get("/users")).text
        assert "new@example.com" in page and "Depot" in page
        r = await admin.post("/users", {"email": "new@example.com", "password": PASSWORD})
        assert r.status_code == 422 and "Choose a role" in r.text
        r = await admin.post(
            "/users", {"email": "x@example.com", "password": "short", "role": "viewer"}
        )
        assert r.status_code == 422 and "at least 8 characters" in r.text
        assert '<p class="field-error" id="password-error">A password needs' in r.text
        r = await admin.post(
            "/users",
            {"email": "y@example.com", "password": PASSWORD, "role": "viewer", "access": "some"}
            | {"sites": ["no-such-site"]},
        )
        assert '<p class="field-error" id="sites-error">No site &#39;no-such-site&#39;' in r.text
        r = await admin.post(
            "/users", {"email": "new@example.com", "password": PASSWORD, "role": "viewer"}
        )
        assert r.status_code == 422 and "already exists" in r.text

        edit = f"/users/{new.user.id}"
        assert "Only these sites" in (await admin.get(edit)).text
        r = await admin.post(edit, {"role": "operator", "access": "all", "password": ""})
        assert r.headers["location"] == "/users?done=saved"
        changed = await Accounts(store).get_account(new.user.id)
        assert changed.user.role == "operator" and changed.sites is None
        assert (await admin.get("/users/9999")).status_code == 404
        assert (await admin.get("/users/abc")).status_code == 404

        me = next(
            a for a in await Accounts(store).list_accounts() if a.user.email == "admin@example.com"
        )
        assert (await admin.get(f"/users/{me.user.id}/delete")).status_code == 409
        assert (await admin.post(f"/users/{me.user.id}/delete")).status_code == 409
        # Own role cannot change; own password can, and the admin stays signed in.
        r = await admin.post(
            f"/users/{me.user.id}",
            {"role": "viewer", "access": "all", "password": "a brand new password"},
        )
        assert r.status_code == 303
        assert (await Accounts(store).get_account(me.user.id)).user.role == "admin"
        assert (await admin.get("/users")).status_code == 200

        assert "Delete new@example.com?" in (await admin.get(f"{edit}/delete")).text
        r = await admin.post(f"{edit}/delete")
        assert r.headers["location"] == "/users?done=deleted"
        assert all(a.user.email != "new@example.com" for a in await Accounts(store).list_accounts())


async def test_charging_stations_stream_live(srv: RunningServer) -> None:
    site = await srv.runtime.store.sites.create("Depot", "cloud")
    await srv.runtime.store.chargers.register(site.uid, "CP-0")
    async with (
        await signed_in(srv, "v@example.com", "viewer") as viewer,
        viewer.http.stream(
            "GET",
            f"/sites/{site.uid}/events",
            headers={"Cookie": f"__Host-harmone_session={viewer.session}"},
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        events = EventReader(response)
        snapshot = await events.until("snapshot")
        assert 'data-id="CP-0"' in snapshot["html"] and "Offline" in snapshot["html"]
        ws = await charger(f"{ocpp_base(srv)}/{site.uid}/CP-1")
        row = await events.until("charger", lambda d: d["id"] == "CP-1" and "Online" in d["html"])
        assert "No CPMS" in row["html"]
        await ws.send(BOOT)
        await recv_json(ws)
        await events.until("charger", lambda d: "Wallbox" in d["html"])
        await ws.send('[2,"h1","Heartbeat",{}]')
        await recv_json(ws)
        seen = await events.until("seen")
        assert seen["id"] == "CP-1" and seen["last_seen"].startswith("20")
        await ws.close()
        await events.until("charger", lambda d: d["id"] == "CP-1" and "Offline" in d["html"])
        await srv.runtime.store.sites.delete(site.uid)
        await charger_event(srv, site.uid)
        await events.until("gone")


async def charger_event(srv: RunningServer, site_uid: str) -> None:
    """Something for the stream to notice (the site was deleted under it)."""
    live = srv.runtime.hub.live_state(site_uid, "CP-1")
    assert live is not None
    srv.runtime.hub.changed(live)


async def test_charger_stream_sends_new_frames_and_state(srv: RunningServer) -> None:
    site = await srv.runtime.store.sites.create("Depot", "cloud")
    ws = await charger(f"{ocpp_base(srv)}/{site.uid}/CP-1")
    await ws.send('[2,"h0","Heartbeat",{}]')
    await recv_json(ws)
    first = srv.runtime.hub.frames(site.uid, "CP-1")[-1].at
    async with (
        await signed_in(srv, "v@example.com", "viewer") as viewer,
        viewer.http.stream(
            "GET",
            f"/sites/{site.uid}/chargers/CP-1/events?after={first!r}",
            headers={"Cookie": f"__Host-harmone_session={viewer.session}"},
        ) as response,
    ):
        events = EventReader(response)
        state = await events.until("state")
        assert state["connected"] is True and "Online" in state["html"]
        await ws.send(BOOT)
        await recv_json(ws)
        frames = await events.until("frames")
        assert [f["action"] for f in frames] == ["BootNotification", "BootNotification"]
        assert "Heartbeat" not in json.dumps(frames)  # only what came after `after`
        assert "&#34;chargePointVendor&#34;: &#34;ACME&#34;" in frames[0]["html"]
        assert "CallResult" in frames[1]["html"]
        state = await events.until("state", lambda d: "ACME" in d["html"])
        await ws.close()
        state = await events.until("state", lambda d: not d["connected"])
        assert "Offline" in state["html"]


async def test_error_pages(srv: RunningServer) -> None:
    async with await signed_in(srv, "v@example.com", "viewer") as viewer:
        r = await viewer.get("/no/such/page")
        assert r.status_code == 404 and "text/html" in r.headers["content-type"]
        assert "Page not found" in r.text and "v@example.com" in r.text
        r = await viewer.get("/sites/nope/control-hub")
        assert r.status_code == 404 and "Site not found" in r.text
    async with httpx.AsyncClient(base_url=srv.url) as anon:
        r = await anon.get("/api/v1/no-such-thing")
        assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


def test_describe_frames() -> None:
    frames = [
        FrameRecord(1.0, "charger", "cpms", '[2,"1","Authorize",{"idTag":"AB"}]'),
        FrameRecord(1.5, "cpms", "charger", '[3,"1",{"idTagInfo":{"status":"Accepted"}}]'),
        FrameRecord(2.0, "cpms", "charger", '[2,"c","Reset",{"type":"Soft"}]'),
        FrameRecord(2.5, "charger", "cpms", '[4,"c","NotSupported","nope",{}]'),
        FrameRecord(3.0, "charger", "harmone", "not json"),
        FrameRecord(3.5, "harmone", "charger", '[3,"unknown",{}]'),
    ]
    out = describe_frames(frames)
    assert [(f["kind"], f["action"]) for f in out] == [
        ("Call", "Authorize"),
        ("CallResult", "Authorize"),
        ("Call", "Reset"),
        ("CallError", "Reset"),
        ("Unreadable", None),
        ("CallResult", None),
    ]
    assert out[0]["body"] == '{\n  "idTag": "AB"\n}'
    assert out[0]["time"] == "1970-01-01T00:00:01Z"
    assert '"errorCode": "NotSupported"' in out[3]["body"]
    assert out[4]["body"] == "not json" and out[4]["preview"] == "not json"
    long = describe_frames(
        [FrameRecord(0, "charger", "cpms", f'[2,"x","DataTransfer",{{"data":"{"a" * 500}"}}]')]
    )
    assert len(long[0]["preview"]) == 140 and long[0]["preview"].endswith("…")


def test_relative_times() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert relative(None) == "never"
    assert relative(now - timedelta(seconds=12), now) == "12 s ago"
    assert relative(now - timedelta(minutes=3), now) == "3 min ago"
    assert relative(now - timedelta(hours=5), now) == "5 h ago"
    assert relative(now - timedelta(days=2), now) == "2 d ago"
    assert relative(now + timedelta(seconds=5), now) == "0 s ago"
