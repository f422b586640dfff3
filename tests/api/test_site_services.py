"""The sites and chargers services: each change and its effect on live connections, over a
real HARMON-E with chargers connected on 127.0.0.1, through the REST API and the services."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets
from console_support import PASSWORD, api_client, ocpp_base
from support import RawCpms, charger, recv_json, wait_for

from harmone.errors import InvalidFields, NotFound
from harmone.services.accounts import Accounts
from harmone.services.chargers import ChargerService
from harmone.services.sites import SiteService
from harmone.web.serve import RunningServer

CHARGER_PASSWORD = "a-charger-password-16+"


pytestmark = pytest.mark.usefixtures("cheap_argon2")


@pytest.fixture
async def api(srv: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    await Accounts(srv.runtime.store).create_account("admin@example.com", PASSWORD, "admin")
    async with await api_client(srv, "admin@example.com") as client:
        yield client


async def closed_with(ws: websockets.ClientConnection) -> tuple[int, str]:
    with pytest.raises(websockets.ConnectionClosed) as info:
        await recv_json(ws)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


class Recorder:
    """A party that keeps a copy of sites and chargers (a cache, another node)."""

    def __init__(self, srv: RunningServer) -> None:
        self.srv = srv
        self.told: list[tuple[str, ...]] = []
        #: for each call: whether a connected charger of that site was still open
        self.links_open: list[bool] = []

    def _note(self, *event: str) -> None:
        self.told.append(event)
        links = self.srv.runtime.hub.links_for_site(event[1])
        self.links_open.append(any(not link.closed.is_set() for link in links))

    def site_changed(self, uid: str) -> None:
        self._note("site", uid)

    def charger_changed(self, site_uid: str, charger_id: str) -> None:
        self._note("charger", site_uid, charger_id)


async def test_a_new_site_cpms_moves_only_the_chargers_that_inherit_it(
    srv: RunningServer, api: httpx.AsyncClient
) -> None:
    async with RawCpms() as old, RawCpms() as new, RawCpms() as own:
        site = await srv.runtime.store.sites.create("S", "cloud", cpms_url=old.url)
        await srv.runtime.store.chargers.register(site.uid, "CP-OWN")
        await srv.runtime.store.chargers.update(site.uid, "CP-OWN", cpms_url=own.url)
        inherits = await charger(f"{ocpp_base(srv)}/{site.uid}/CP-1")
        keeps = await charger(f"{ocpp_base(srv)}/{site.uid}/CP-OWN")
        await wait_for(lambda: "CP-1" in old.conns and "CP-OWN" in own.conns)
        r = await api.patch(f"/api/v1/sites/{site.uid}", json={"cpms_url": new.url})
        assert r.status_code == 200 and r.json()["cpms_url"] == new.url
        assert await closed_with(inherits) == (1012, "CPMS changed; reconnect")
        await keeps.send('[2,"1","Heartbeat",{}]')
        assert (await recv_json(keeps))[0] == 3  # its own CPMS did not change: still relayed
        async with await charger(f"{ocpp_base(srv)}/{site.uid}/CP-1"):
            await wait_for(lambda: "CP-1" in new.conns)
        await keeps.close()


async def test_switching_to_strict_applies_to_open_links_at_once(
    srv: RunningServer, api: httpx.AsyncClient
) -> None:
    cpms = RawCpms()
    await cpms.start()
    try:
        site = await srv.runtime.store.sites.create("S", "cloud", cpms_url=cpms.url)
        ws = await charger(f"{ocpp_base(srv)}/{site.uid}/CP-1")
        await wait_for(lambda: "CP-1" in cpms.conns)
        r = await api.patch(f"/api/v1/sites/{site.uid}", json={"offline_mode": "strict"})
        assert r.status_code == 200 and r.json()["offline_mode"] == "strict"
        await cpms.stop()  # in hold mode the charger would stay, answered locally
        code, _ = await closed_with(ws)
        assert code == 1012
    finally:
        await cpms.stop()


async def test_switching_back_to_hold_keeps_the_charger_when_the_cpms_goes(
    srv: RunningServer, api: httpx.AsyncClient
) -> None:
    cpms = RawCpms()
    await cpms.start()
    try:
        site = await srv.runtime.store.sites.create(
            "S", "cloud", cpms_url=cpms.url, offline_mode="strict"
        )
        ws = await charger(f"{ocpp_base(srv)}/{site.uid}/CP-1")
        await wait_for(lambda: "CP-1" in cpms.conns)
        r = await api.patch(f"/api/v1/sites/{site.uid}", json={"offline_mode": "hold"})
        assert r.status_code == 200
        await cpms.stop()
        live = srv.runtime.hub.live_state(site.uid, "CP-1")
        await wait_for(lambda: live is not None and not live.upstream_connected)
        await ws.send('[2,"1","Heartbeat",{}]')
        assert (await recv_json(ws))[0] == 3  # answered by HARMON-E, still connected
        await ws.close()
    finally:
        await cpms.stop()


async def test_removing_a_password_disconnects_the_charger_on_an_auth_site(
    srv: RunningServer, api: httpx.AsyncClient
) -> None:
    site = await srv.runtime.store.sites.create("S", "cloud", charger_auth=True)
    base = f"/api/v1/sites/{site.uid}/chargers/CP-1/password"
    r = await api.put(base, json={"password": CHARGER_PASSWORD})
    assert r.status_code == 200 and r.json()["password_set"] is True
    credentials = base64.b64encode(f"CP-1:{CHARGER_PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}"}
    ws = await charger(f"{ocpp_base(srv)}/{site.uid}/CP-1", additional_headers=headers)
    r = await api.delete(base)
    assert r.status_code == 200 and r.json()["password_set"] is False
    assert await closed_with(ws) == (1012, "its password was removed")
    with pytest.raises(websockets.InvalidStatus) as refused:
        await charger(f"{ocpp_base(srv)}/{site.uid}/CP-1", additional_headers=headers)
    assert refused.value.response.status_code == 401
    assert (await api.delete(f"/api/v1/sites/{site.uid}/chargers/CP-404/password")).status_code == (
        404
    )


async def test_removing_a_password_on_an_open_site_keeps_the_charger(
    srv: RunningServer, api: httpx.AsyncClient
) -> None:
    site = await srv.runtime.store.sites.create("S", "cloud")
    base = f"/api/v1/sites/{site.uid}/chargers/CP-1/password"
    assert (await api.put(base, json={"password": CHARGER_PASSWORD})).status_code == 200
    ws = await charger(f"{ocpp_base(srv)}/{site.uid}/CP-1")
    assert (await api.delete(base)).json()["password_set"] is False
    await ws.send('[2,"1","Heartbeat",{}]')
    assert (await recv_json(ws))[0] == 3
    await ws.close()


async def test_watchers_are_told_after_the_write_and_before_links_close(
    srv: RunningServer,
) -> None:
    rt = srv.runtime
    recorder = Recorder(srv)
    sites = SiteService(rt.store, rt.hub, rt.cloud_base_url, watchers=[recorder])
    chargers = ChargerService(rt.store, rt.hub, watchers=[recorder])
    site = await sites.create("S", "cloud")
    ws = await charger(f"{ocpp_base(srv)}/{site.uid}/CP-1")
    await wait_for(lambda: rt.hub.link(site.uid, "CP-1") is not None)
    await sites.update(site.uid, {"name": "S2"})
    update = await chargers.update(site.uid, "CP-1", {"cpms_url": "ws://127.0.0.1:9/x"})
    assert update.reconnected and update.charger.cpms_url == "ws://127.0.0.1:9/x"
    await asyncio.wait_for(ws.wait_closed(), 5)
    await chargers.set_password(site.uid, "CP-2", CHARGER_PASSWORD)
    await chargers.clear_password(site.uid, "CP-2")
    ws = await charger(f"{ocpp_base(srv)}/{site.uid}/CP-3")
    await wait_for(lambda: rt.hub.link(site.uid, "CP-3") is not None)
    assert await sites.delete(site.uid) == 1
    assert recorder.told == [
        ("site", site.uid),
        ("site", site.uid),
        ("charger", site.uid, "CP-1"),
        ("charger", site.uid, "CP-2"),
        ("charger", site.uid, "CP-2"),
        ("site", site.uid),
    ]
    # The charger changes and the delete were told while the charger was still connected.
    assert recorder.links_open[2] and recorder.links_open[-1]
    await asyncio.wait_for(ws.wait_closed(), 5)


async def test_service_errors_name_the_field(srv: RunningServer) -> None:
    rt = srv.runtime
    with pytest.raises(InvalidFields) as bad:
        await rt.sites.create("S", "gateway")
    assert bad.value.fields == {"gateway_host": "a gateway site needs the box's LAN address"}
    site = await rt.sites.create("S", "cloud")
    with pytest.raises(InvalidFields) as bad:
        await rt.sites.update(site.uid, {"cpms_url": "http://x", "name": " "})
    assert set(bad.value.fields) == {"cpms_url", "name"}
    with pytest.raises(InvalidFields) as bad:
        await rt.chargers.set_password(site.uid, "CP:1", CHARGER_PASSWORD)
    assert set(bad.value.fields) == {"charger_id"}
    with pytest.raises(InvalidFields) as bad:
        await rt.chargers.set_password(site.uid, "CP-1", "short")
    assert set(bad.value.fields) == {"password"}
    with pytest.raises(NotFound):
        await rt.sites.update("nope", {"name": "x"})
    with pytest.raises(NotFound):
        await rt.chargers.update(site.uid, "nope", {"name": "x"})
    with pytest.raises(NotFound):
        await rt.sites.delete("nope")
