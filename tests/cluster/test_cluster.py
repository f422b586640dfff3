"""Three HARMON-E nodes (real processes) on the local PostgreSQL and NATS: chargers spread
over them, calls across nodes, a charger that moves, a node killed with -9."""

from __future__ import annotations

import asyncio

import pytest
from cluster_support import Node, cluster, wait_until

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
        sims = [SimulatedCharger(n.ocpp_url(site), f"CP-{i}", "1.6") for i, n in enumerate((a, b, c))]
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
