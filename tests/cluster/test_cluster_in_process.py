"""Two nodes as in-process apps on two ports (same PostgreSQL database, same NATS): the same
paths as the process tests, here where coverage sees them, plus a clean stop that hands the
site's load manager over at once."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cluster_support import NATS_URL, _delete_bucket, cluster_database, need_nats
from support import PATIENCE, client_for, harmone_server, wait_for

from harmone.config import ClusterConfig
from harmone.sim import SimulatedCharger
from harmone.web.serve import RunningServer

pytestmark = pytest.mark.postgres

LM: dict[str, Any] = {
    "policy": "equal_share",
    "resend_step": 0.5,
    "min_interval": 0,
    "tree": {"id": "grid", "max_current": 32},
    "default_charger": {"max_current": 32, "phases": 3},
}


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    need_nats()
    name = f"t{secrets.token_hex(4)}"
    async with cluster_database() as db:
        try:
            async with (
                harmone_server(
                    tmp_path, db_url=db.url, cluster=ClusterConfig(NATS_URL, f"{name}-a", name)
                ) as a,
                harmone_server(
                    tmp_path, db_url=db.url, cluster=ClusterConfig(NATS_URL, f"{name}-b", name)
                ) as b,
            ):
                yield a, b
        finally:
            await _delete_bucket(f"{name}_site_leases")


def _node(srv: RunningServer) -> Any:
    assert srv.runtime is not None and srv.runtime.cluster is not None
    return srv.runtime.cluster


async def test_two_in_process_nodes_share_a_site_calls_and_frames(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (a, b), await client_for(a, email="a@x.org") as api:
        r = await api.post("/api/v1/sites", json={"name": "S", "type": "cloud"})
        site = r.json()["uid"]
        r = await api.put(f"/api/v1/sites/{site}/load-management", json=LM)
        assert r.status_code == 200, r.text
        await wait_for(lambda: bool(_node(a).leases.holders.get(site)), PATIENCE)
        x = SimulatedCharger(f"{a.url.replace('http', 'ws')}/{site}", "IP-X", "1.6")
        y = SimulatedCharger(f"{b.url.replace('http', 'ws')}/{site}", "IP-Y", "1.6")
        async with x, y:
            for sim in (x, y):
                await sim.boot()
                await sim.status(1, "Available")
            await x.start_transaction(1, "T-X")
            await y.start_transaction(1, "T-Y")
            await wait_for(lambda: x.current_limit(1) == 16 and y.current_limit(1) == 16, PATIENCE)
            await wait_for(lambda: _node(a).directory.holder(site, "IP-Y") is not None, PATIENCE)
            # node A calls the charger on node B, and shows its frames
            r = await api.post(
                f"/api/v1/sites/{site}/chargers/IP-Y/calls",
                json={"action": "GetConfiguration", "payload": {}},
            )
            assert r.status_code == 200, r.text
            frames = (await api.get(f"/api/v1/sites/{site}/chargers/IP-Y/frames")).json()
            assert any("GetConfiguration" in f["text"] for f in frames)
            # a CallError from the charger on the other node comes back as 502 with its code
            r = await api.post(
                f"/api/v1/sites/{site}/chargers/IP-Y/calls",
                json={"action": "NoSuchAction", "payload": {}},
            )
            assert r.status_code == 502, r.text
            status = _node(b).status()
            assert {n["id"] for n in status["nodes"]} == {_node(a).id, _node(b).id}
            assert status["leases"][site] in (_node(a).id, _node(b).id)
            # a new configuration stored on either node reaches the leader
            r = await api.put(
                f"/api/v1/sites/{site}/load-management",
                json={**LM, "tree": {"id": "grid", "max_current": 20}},
            )
            assert r.status_code == 200, r.text
            await wait_for(lambda: x.current_limit(1) == 10 and y.current_limit(1) == 10, PATIENCE)


async def test_a_node_that_stops_cleanly_hands_its_sites_over(tmp_path: Path) -> None:
    need_nats()
    name = f"t{secrets.token_hex(4)}"
    async with cluster_database() as db, contextlib.AsyncExitStack() as outer:
        outer.push_async_callback(_delete_bucket, f"{name}_site_leases")
        stacks = [contextlib.AsyncExitStack() for _ in range(2)]
        nodes = []
        for i, stack in enumerate(stacks):
            await outer.enter_async_context(stack)
            config = ClusterConfig(NATS_URL, f"{name}-{i}", name)
            nodes.append(
                await stack.enter_async_context(
                    harmone_server(tmp_path, db_url=db.url, cluster=config)
                )
            )
        api = await outer.enter_async_context(await client_for(nodes[0], email="c@x.org"))
        site = (await api.post("/api/v1/sites", json={"name": "S", "type": "cloud"})).json()["uid"]
        assert (await api.put(f"/api/v1/sites/{site}/load-management", json=LM)).status_code == 200
        await wait_for(lambda: bool(_node(nodes[0]).leases.holders.get(site)), PATIENCE)
        lead = next(i for i, n in enumerate(nodes) if site in _node(n).leases.held)
        other = nodes[1 - lead]
        await stacks[lead].aclose()  # SIGTERM's path: leases released, goodbye said
        await wait_for(lambda: site in _node(other).leases.held, PATIENCE)
        assert _node(other).directory.alive_nodes(_node(other)._now())[0].id == _node(other).id
