"""The last gaps of gateway sites (issue 12): the cloud does not run a gateway site's load
management (its box does), a charger deleted in the cloud leaves the box, and the cloud
console's Load management tab shows what the box reports. A cloud and a box on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway_support import box, box_config, cloud, free_port
from test_gateway import _const, eventually, gateway_site, pairing_code

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
