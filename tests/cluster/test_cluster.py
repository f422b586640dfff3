"""Three HARMON-E nodes (real processes) on the local PostgreSQL and NATS: chargers spread
over them, calls across nodes, a charger that moves, a node killed with -9."""

from __future__ import annotations

import asyncio

import pytest
from cluster_support import Node, cluster, wait_until
from support import PATIENCE, charger

from harmone.sim import SimulatedCharger

pytestmark = pytest.mark.postgres


async def _site(node: Node, name: str = "Depot") -> str:
    async with node.api() as api:
        r = await api.post("/api/v1/sites", json={"name": name, "type": "cloud"})
        assert r.status_code == 201, r.text
        uid: str = r.json()["uid"]
        return uid


async def test_an_api_call_on_one_node_reaches_a_charger_on_another() -> None:
    async with cluster(3) as (a, b, c):
        site = await _site(a)
        sims = [
            SimulatedCharger(n.ocpp_url(site), f"CP-{i}", "1.6") for i, n in enumerate((a, b, c))
        ]
        for sim in sims:
            await sim.connect()
            await sim.boot()
        try:
            # each node holds one charger; every node sees three
            async def spread() -> bool:
                status = await a.status()
                return sorted(n["chargers"] for n in status["nodes"]) == [1, 1, 1]

            await wait_until(spread)
            async with a.api() as api:
                r = await api.post(
                    f"/api/v1/sites/{site}/chargers/CP-2/calls",
                    json={"action": "GetConfiguration", "payload": {"key": ["HeartbeatInterval"]}},
                )
                assert r.status_code == 200, r.text
                keys = r.json()["result"]["configurationKey"]
                assert keys[0]["key"] == "HeartbeatInterval"
                # the charger on node C got exactly that call
                assert [action for action, _ in sims[2].received_calls] == ["GetConfiguration"]
                # a charger nobody holds any more: 409 with why
                await sims[1].close()
                await wait_until(lambda: _held(a, 2))
                r = await api.post(
                    f"/api/v1/sites/{site}/chargers/CP-1/calls",
                    json={"action": "Reset", "payload": {"type": "Soft"}},
                )
                assert r.status_code == 409, r.text
                assert "not connected" in r.json()["detail"]
        finally:
            for sim in sims:
                await sim.close()


async def _held(node: Node, count: int) -> bool:
    status = await node.status()
    return sum(n["chargers"] for n in status["nodes"]) == count


async def test_a_charger_that_reconnects_to_another_node_closes_its_stale_session() -> None:
    async with cluster(2) as (a, b):
        site = await _site(a)
        first = await charger(f"{a.ocpp_url(site)}/CP-MOVE")
        await first.send('[2,"1","Heartbeat",{}]')
        await asyncio.wait_for(first.recv(), PATIENCE)
        await wait_until(lambda: _held(b, 1))
        # the charger comes back on node B while node A still holds the old session
        second = await charger(f"{b.ocpp_url(site)}/CP-MOVE")
        await asyncio.wait_for(first.wait_closed(), PATIENCE)
        assert first.close_code == 1000
        assert "replaced by a new connection" in (first.close_reason or "")
        await second.send('[2,"2","Heartbeat",{}]')
        assert '"currentTime"' in await asyncio.wait_for(second.recv(), PATIENCE)

        async def on_b_only() -> bool:
            nodes = {n["id"]: n["chargers"] for n in (await a.status())["nodes"]}
            return nodes == {a.id: 0, b.id: 1}

        await wait_until(on_b_only)
        async with a.api() as api:
            r = await api.get(f"/api/v1/sites/{site}/chargers/CP-MOVE")
            assert r.json()["connected"] is True
        await second.close()
