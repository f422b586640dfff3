"""What the console says about chargers and URLs (issue 10): an offline charger's last known
connector status, the online / total badge, the Control Hub's explanation of the URL it
shows, the live connection log, and the sign-in page of a database without an admin."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import websockets
from console_support import BOOT, ConsoleClient, EventReader, ocpp_base, signed_in
from support import charger, harmone_server, recv_json, wait_for

from harmone.services.accounts import Accounts
from harmone.web.console.control_hub import ocpp_url_facts
from harmone.web.console.render import charger_path
from harmone.web.serve import RunningServer

AVAILABLE = (
    '[2,"s1","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Available"}]'
)


pytestmark = pytest.mark.usefixtures("cheap_argon2")


async def test_an_offline_chargers_connectors_are_shown_as_last_known(srv: RunningServer) -> None:
    site = await srv.runtime.store.sites.create("Depot", "cloud")
    async with await signed_in(srv, "v@example.com", "viewer") as viewer:
        ws = await charger(f"{ocpp_base(srv)}/{site.uid}/CP-1")
        for frame in (BOOT, AVAILABLE):
            await ws.send(frame)
            await recv_json(ws)
        await wait_for(lambda: 1 in srv.runtime.hub.live_state(site.uid, "CP-1").connectors)
        online = (await viewer.get(f"/sites/{site.uid}/chargers")).text
        assert '<span class="chip ok">#1 Available</span>' in online
        assert "last known" not in online
        await ws.close()
        await wait_for(lambda: not srv.runtime.hub.links)
        for path in (f"/sites/{site.uid}/chargers", charger_path(site.uid, "CP-1")):
            page = (await viewer.get(path)).text
            assert "chip ok" not in page, path  # no green "Available" for a charger that left
            chip = re.search(r'<span class="chip stale"[^>]*>([^<]*)<span', page)
            assert chip is not None and "Available" in chip.group(1), path
            assert '<span class="stale-note">(last known)</span>' in page


async def test_the_charging_stations_tab_counts_online_of_total(srv: RunningServer) -> None:
    site = await srv.runtime.store.sites.create("Depot", "cloud")
    await srv.runtime.store.chargers.register(site.uid, "CP-0")
    badge = re.compile(
        r"data-charger-count[^>]*><span data-online-count>(\d+)</span> / "
        r"<span data-total-count>(\d+)</span>"
    )
    async with await signed_in(srv, "v@example.com", "viewer") as viewer:
        for tab in ("control-hub", "chargers", "connection-log"):
            found = badge.search((await viewer.get(f"/sites/{site.uid}/{tab}")).text)
            assert found is not None and found.groups() == ("0", "1"), tab
        async with await charger(f"{ocpp_base(srv)}/{site.uid}/CP-1"):
            await wait_for(lambda: bool(srv.runtime.hub.links))
            found = badge.search((await viewer.get(f"/sites/{site.uid}/chargers")).text)
            assert found is not None and found.groups() == ("1", "2")


def test_ocpp_url_facts() -> None:
    local = ocpp_url_facts("ws://127.0.0.1:8080/UID", "UID")
    assert (local.url_format, local.tls, local.port, local.local_only) == (
        "ws://127.0.0.1:8080/{site-UID}",
        False,
        8080,
        True,
    )
    public = ocpp_url_facts("wss://ocpp.example.com/UID", "UID")
    assert (public.url_format, public.tls, public.port, public.local_only) == (
        "wss://ocpp.example.com/{site-UID}",
        True,
        443,
        False,
    )
    assert ocpp_url_facts("wss://[::1]:9443/U", "U").local_only
    assert ocpp_url_facts("ws://localhost:80/U", "U").local_only
    assert not ocpp_url_facts("ws://192.168.1.10:8080/U", "U").local_only


async def test_the_control_hub_explains_the_url_it_shows(srv: RunningServer) -> None:
    """Without --public-url the URL is ws://127.0.0.1:port/…: the page says so, and that only
    this machine can reach it, instead of describing wss:// on port 443."""
    site = await srv.runtime.store.sites.create("Depot", "cloud")
    port = srv.url.rsplit(":", 1)[1]
    async with await signed_in(srv, "v@example.com", "viewer") as viewer:
        page = (await viewer.get(f"/sites/{site.uid}/control-hub")).text
    assert f'value="ws://127.0.0.1:{port}/{site.uid}"' in page
    assert f'URL format: <span class="mono">ws://127.0.0.1:{port}/{{site-UID}}</span>' in page
    assert 'id="local-only"' in page and "Only this machine can reach this URL" in page
    assert "started without <span" in page
    assert f"outgoing connections (plain WebSocket, port {port})" in page
    assert "usually port 443" not in page


async def test_the_control_hub_behind_a_public_url(tmp_path: Path) -> None:
    async with harmone_server(tmp_path, public_url="wss://ocpp.example.com") as srv:
        cloud = await srv.runtime.store.sites.create("Cloud", "cloud")
        gateway = await srv.runtime.store.sites.create(
            "Box", "gateway", gateway_host="192.168.1.10:8443"
        )
        async with await signed_in(srv, "v@example.com", "viewer") as viewer:
            page = (await viewer.get(f"/sites/{cloud.uid}/control-hub")).text
            assert 'URL format: <span class="mono">wss://ocpp.example.com/{site-UID}</span>' in page
            assert "local-only" not in page and "not-encrypted" not in page
            assert "outgoing connections (WebSocket over TLS, port 443)" in page
            page = (await viewer.get(f"/sites/{gateway.uid}/control-hub")).text
            assert "wss://{gateway-or-flexbox-IP}/{site-UID}" in page
            assert "outgoing connections (WebSocket over TLS, port 8443)" in page


async def test_the_connection_log_is_live(srv: RunningServer) -> None:
    site = await srv.runtime.store.sites.create("Depot", "cloud")
    async with (
        await signed_in(srv, "v@example.com", "viewer") as viewer,
        viewer.http.stream(
            "GET",
            f"/sites/{site.uid}/connection-log/events",
            headers={"Cookie": f"__Host-harmone_session={viewer.session}"},
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        events = EventReader(response)
        assert (await events.until("log"))["html"] == ""  # nothing yet
        with pytest.raises(websockets.InvalidStatus):
            await charger(f"{ocpp_base(srv)}/{site.uid}/CP-1", subprotocols=())
        refused = await events.until("log")
        assert "CP-1" in refused["html"] and "offered no OCPP version" in refused["html"]
        async with await charger(f"{ocpp_base(srv)}/{site.uid}/CP-2"):
            both = await events.until("log", lambda d: "CP-2" in d["html"])
        assert both["html"].index("CP-2") < both["html"].index("CP-1")  # newest first
        assert both["html"].count("<tr>") == 2
        await srv.runtime.store.sites.delete(site.uid)
        await events.until("gone")


async def test_sign_in_says_how_to_create_the_first_admin(srv: RunningServer) -> None:
    async with ConsoleClient(srv) as anon:
        page = (await anon.get("/login")).text
        assert 'id="no-admin"' in page and "harmone init --db" in page
        await Accounts(srv.runtime.store).create_user("a@example.com", "x" * 12, "operator")
        assert 'id="no-admin"' in (await anon.get("/login")).text  # an operator is no admin
        await Accounts(srv.runtime.store).create_user("b@example.com", "x" * 12, "admin")
        assert 'id="no-admin"' not in (await anon.get("/login")).text
