"""The last gaps of gateway sites (issue 12): the cloud does not run a gateway site's load
management (its box does), a charger deleted in the cloud leaves the box, and the cloud
console's Load management tab shows what the box reports. A cloud and a box on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from console_support import signed_in
from gateway_support import box, box_config, cloud, free_port, trust
from support import PATIENCE
from test_gateway import _const, _is, eventually, gateway_site, pairing_code

from harmone.sim import SimulatedCharger, SimulatedCpms

METER = {
    "host": "127.0.0.1",
    "port": 1,  # on the site's LAN: unreachable from the cloud
    "register_map": "eastron_sdm630",
    "poll_interval": 0.1,
    "timeout": 0.3,
}

TREE: dict[str, Any] = {
    "tree": {
        "id": "grid",
        "max_current": 63,
        "children": [{"id": "hall", "max_current": 32, "meter": METER}],
    },
}


async def test_the_cloud_keeps_a_gateway_sites_load_config_but_only_its_box_runs_it(
    tmp_path: Path,
) -> None:
    async with cloud(tmp_path) as (srv, api):
        site = await gateway_site(api, free_port(), None)
        uid = site["uid"]
        r = await api.put(f"/api/v1/sites/{uid}/load-management", json=TREE)
        assert r.status_code == 200, r.text
        # A cloud site with the same tree, for contrast: the cloud runs that one.
        r = await api.post("/api/v1/sites", json={"name": "Office", "type": "cloud"})
        other = r.json()["uid"]
        r = await api.put(f"/api/v1/sites/{other}/load-management", json=TREE)
        assert r.status_code == 200, r.text
        cloud_lm = srv.runtime.loadmgmt
        assert cloud_lm.runs_here(other) and not cloud_lm.runs_here(uid)
        # A cloud site made a gateway site stops running here, and back.
        changed = {"type": "gateway", "gateway_host": "127.0.0.1:9"}
        assert (await api.patch(f"/api/v1/sites/{other}", json=changed)).status_code == 200
        await eventually(lambda: _const(not cloud_lm.runs_here(other)))
        assert (await api.patch(f"/api/v1/sites/{other}", json={"type": "cloud"})).is_success
        await eventually(lambda: _const(cloud_lm.runs_here(other)))
        # The cloud's own status of the gateway site has no meter polled from the cloud.
        status = (await api.get(f"/api/v1/sites/{uid}/load-management/status")).json()
        assert status["meters"] == {} and status["nodes"] == []
        assert (
            "hall"
            in (await api.get(f"/api/v1/sites/{other}/load-management/status")).json()["meters"]
        )
        # The configuration is kept and served in the cloud.
        got = (await api.get(f"/api/v1/sites/{uid}/load-management")).json()
        assert got["tree"]["children"][0]["id"] == "hall"
        # A dynamic limit is the box's to set: the cloud says so.
        r = await api.put(
            f"/api/v1/sites/{uid}/load-management/nodes/hall/dynamic-limit", json={"limit": 10}
        )
        assert r.status_code == 409 and "box" in r.json()["detail"]
        code = await pairing_code(api, uid)
        async with box(box_config(tmp_path, srv.url, code)) as b:
            box_lm = b.runtime.loadmgmt
            assert box_lm.runs_here(uid)
            assert box_lm.config(uid).tree.children[0].max_current == 32
            # The tree edited in the cloud goes down to the box as configuration.
            edited = {
                **TREE,
                "tree": {**TREE["tree"], "children": [{"id": "hall", "max_current": 20}]},
            }
            r = await api.put(f"/api/v1/sites/{uid}/load-management", json=edited)
            assert r.status_code == 200, r.text
            await eventually(
                lambda: _const(box_lm.config(uid).tree.children[0].max_current == 20), 5.0
            )
            assert not cloud_lm.runs_here(uid)


async def test_a_charger_deleted_in_the_cloud_is_deleted_and_disconnected_on_the_box(
    tmp_path: Path,
) -> None:
    async with cloud(tmp_path) as (srv, api):
        site = await gateway_site(api, free_port(), None)
        uid = site["uid"]
        # Prepared in the cloud before the box is installed (a password makes it known).
        for cid in ("CP-1", "CP-2"):
            r = await api.put(
                f"/api/v1/sites/{uid}/chargers/{cid}/password",
                json={"password": "0123456789abcdef"},
            )
            assert r.status_code == 200, r.text
        code = await pairing_code(api, uid)
        async with box(box_config(tmp_path, srv.url, code)) as b:
            await eventually(lambda: _const(b.link.state == "online"))
            sims = {}
            for cid in ("CP-1", "CP-2"):
                sims[cid] = SimulatedCharger(
                    site["ocpp_url"],
                    cid,
                    ssl_context=trust(b),
                    basic_auth=(cid, "0123456789abcdef"),
                )
                await sims[cid].connect()
                await sims[cid].boot()
            r = await api.delete(f"/api/v1/sites/{uid}/chargers/CP-1")
            assert r.status_code == 204, r.text
            # The box closes the deleted charger, as the cloud would, and forgets it.
            await asyncio.wait_for(sims["CP-1"].closed.wait(), PATIENCE)
            assert not sims["CP-2"].closed.is_set()

            async def box_ids() -> list[str]:
                return [c.id for c in await b.runtime.store.chargers.of_site(uid)]

            await eventually(lambda: _is(box_ids(), lambda ids: ids == ["CP-2"]))
            # ... and the cloud's list, fed by the box, keeps it gone.
            await sims["CP-2"].heartbeat()
            await sims["CP-2"].status(1, "Charging")

            async def cloud_list() -> dict[str, Any]:
                r = await api.get(f"/api/v1/sites/{uid}/chargers")
                return {c["id"]: c for c in r.json()}

            listed = await eventually(
                lambda: _is(
                    cloud_list(),
                    lambda cs: (
                        [(k["id"], k["status"]) for k in cs.get("CP-2", {}).get("connectors", [])]
                        == [(1, "Charging")]
                    ),
                )
            )
            assert list(await cloud_list()) == ["CP-2"], listed
            await sims["CP-2"].close()


async def test_a_connected_charger_deleted_in_the_cloud_is_disconnected_and_stays_deleted(
    tmp_path: Path,
) -> None:
    async with SimulatedCpms() as cpms, cloud(tmp_path) as (_srv, api):
        r = await api.post(
            "/api/v1/sites", json={"name": "Office", "type": "cloud", "cpms_url": cpms.url}
        )
        site = r.json()
        uid = site["uid"]
        gone = SimulatedCharger(site["ocpp_url"], "CP-GONE")
        await gone.connect()
        await gone.boot()
        r = await api.delete(f"/api/v1/sites/{uid}/chargers/CP-GONE")
        assert r.status_code == 204, r.text
        await asyncio.wait_for(gone.closed.wait(), PATIENCE)
        assert (await api.get(f"/api/v1/sites/{uid}/chargers/CP-GONE")).status_code == 404
        assert (await api.delete(f"/api/v1/sites/{uid}/chargers/CP-GONE")).status_code == 404
        # Written after the deletion: another charger's state; the deleted one stays gone.
        other = SimulatedCharger(site["ocpp_url"], "CP-NEXT")
        await other.connect()
        await other.boot()
        await other.status(1, "Available")

        async def ids() -> list[str]:
            return [c["id"] for c in (await api.get(f"/api/v1/sites/{uid}/chargers")).json()]

        async def next_available() -> bool:
            r = await api.get(f"/api/v1/sites/{uid}/chargers/CP-NEXT")
            if r.status_code != 200:
                return False
            return [(k["id"], k["status"]) for k in r.json()["connectors"]] == [(1, "Available")]

        await eventually(next_available)
        assert await ids() == ["CP-NEXT"]
        await other.close()


async def test_the_cloud_consoles_load_tab_of_a_gateway_site_shows_the_boxs_view(
    tmp_path: Path,
) -> None:
    async with cloud(tmp_path) as (srv, api):
        site = await gateway_site(api, free_port(), None)
        uid = site["uid"]
        tree = {
            "tree": {
                "id": "grid",
                "max_current": 63,
                "children": [{"id": "hall", "max_current": 32}],
            }
        }
        r = await api.put(f"/api/v1/sites/{uid}/load-management", json=tree)
        assert r.status_code == 200, r.text
        code = await pairing_code(api, uid)
        async with await signed_in(srv, "ops@example.com", "operator") as browser:
            async with box(box_config(tmp_path, srv.url, code)) as b:
                sim = SimulatedCharger(site["ocpp_url"], "CP-1", ssl_context=trust(b))
                await sim.connect()
                await sim.boot()
                await sim.status(1, "Preparing")
                await sim.start_transaction(1)
                tab = f"/sites/{uid}/load-management"
                # The box's connector table, with its state, in the cloud's tab.
                await eventually(
                    lambda: _is(
                        browser.get(tab),
                        lambda r: (
                            'data-connector="CP-1/1"' in r.text
                            and "Run by the gateway box: reported" in r.text
                        ),
                    )
                )
                page = await browser.get(tab)
                assert "lm-stale" not in page.text
                # The chart's data: the box's rounds, per node.
                await eventually(
                    lambda: _is(
                        browser.get(f"{tab}/series?seconds=900"),
                        lambda r: bool(r.json()["t"]) and "grid" in r.json()["nodes"],
                    )
                )
                series = await browser.get(f"{tab}/series?seconds=900")
                assert series.json()["nodes"]["grid"]["limit"][-1] == 63
                await sim.close()
            # The box is gone: the tab shows what it last reported, marked stale.
            await eventually(lambda: _is(browser.get(tab), lambda r: "lm-stale" in r.text))
            page = await browser.get(tab)
            assert "Gateway offline, last contact" in page.text
            assert 'data-connector="CP-1/1"' in page.text
