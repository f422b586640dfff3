"""Three HARMON-E nodes (real processes) on the local PostgreSQL and NATS: chargers spread
over them, calls across nodes, a charger that moves, a node killed with -9."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from cluster_support import Node, cluster, wait_until
from support import PATIENCE, charger, tx_limits, wait_for

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
                # the message inspector on node A shows that charger's frames, from node C
                r = await api.get(f"/api/v1/sites/{site}/chargers/CP-2/frames")
                assert r.status_code == 200, r.text
                texts = [f["text"] for f in r.json()]
                assert any("BootNotification" in t for t in texts)
                assert any("GetConfiguration" in t for t in texts)
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


LM_CONFIG: dict[str, Any] = {
    "policy": "equal_share",
    "resend_step": 0.5,
    "min_interval": 0,
    "tree": {"id": "grid", "max_current": 32},
    "default_charger": {"max_current": 32, "phases": 3},
}


async def test_one_site_on_two_nodes_is_load_managed_as_one_and_survives_kill_9() -> None:
    async with cluster(3) as nodes:
        first = nodes[0]
        site = await _site(first)
        async with first.api() as api:
            r = await api.put(f"/api/v1/sites/{site}/load-management", json=LM_CONFIG)
            assert r.status_code == 200, r.text

        async def leader() -> str | None:
            holder = (await first.status())["leases"].get(site)
            return str(holder) if holder else None

        await wait_until(lambda: _is_true(leader()))
        lead = await leader()
        # the site's two chargers on two nodes other than... any two nodes: the first two
        x = SimulatedCharger(nodes[0].ocpp_url(site), "LM-X", "1.6")
        y = SimulatedCharger(nodes[1].ocpp_url(site), "LM-Y", "1.6")
        sims = (x, y)
        try:
            for sim in sims:
                await sim.connect()
                await sim.boot()
                await sim.status(1, "Available")
            await x.start_transaction(1, "TAG-X")
            await wait_for(lambda: x.current_limit(1) == 32, PATIENCE)
            await y.start_transaction(1, "TAG-Y")
            # one site across two nodes: 32 A shared, 16 A each, whichever node leads
            await wait_for(lambda: x.current_limit(1) == 16 and y.current_limit(1) == 16, PATIENCE)

            # kill -9 the node that runs the site's load manager
            victim = next(n for n in nodes if n.id == lead)
            survivors = [n for n in nodes if n is not victim]
            victim.kill()
            await victim.proc.wait()
            # its chargers reconnect elsewhere (a real charger dials the same URL again and a
            # load balancer sends it to a live node)
            for sim, node in ((x, nodes[0]), (y, nodes[1])):
                if node is victim:
                    await sim.wait_closed(PATIENCE)
                    sim.url_base = survivors[0].ocpp_url(site)
                    await sim.connect()
                    await sim.status(1, "Charging")

            # the lease moves to a survivor within seconds
            async def moved() -> bool:
                holder = (await survivors[0].status())["leases"].get(site)
                return holder is not None and holder != victim.id

            await wait_until(moved)
            # limits hold throughout: never more than the site's 32 A granted in total
            assert x.current_limit(1) + y.current_limit(1) <= 32
            # the new leader rebuilt the site from what is stored: when Y stops, X gets 32 A
            await y.stop_transaction(1, wh=500)
            await wait_for(lambda: x.current_limit(1) == 32, PATIENCE)
            assert y.current_limit(1) in (0, None)
        finally:
            for sim in sims:
                await sim.close()


async def _is_true(value: Any) -> bool:
    return bool(await value)


async def test_a_paused_leader_loses_the_site_and_never_sends_after_the_new_one() -> None:
    async with cluster(2) as nodes:
        site = await _site(nodes[0])
        async with nodes[0].api() as api:
            r = await api.put(f"/api/v1/sites/{site}/load-management", json=LM_CONFIG)
            assert r.status_code == 200, r.text

        async def leader() -> str | None:
            holder = (await nodes[0].status())["leases"].get(site)
            return str(holder) if holder else None

        await wait_until(lambda: _is_true(leader()))
        lead_id = await leader()
        lead = next(n for n in nodes if n.id == lead_id)
        other = next(n for n in nodes if n is not lead)
        x = SimulatedCharger(other.ocpp_url(site), "LM-P", "1.6")
        await x.connect()
        try:
            await x.boot()
            await x.status(1, "Available")
            await x.start_transaction(1, "TAG-P")
            await wait_for(lambda: x.current_limit(1) == 32, PATIENCE)
            # the leader stops answering anything (a long GC pause, a frozen VM)
            lead.proc.send_signal(signal.SIGSTOP)
            try:

                async def other_leads() -> bool:
                    return (await other.status())["sites_led"] == [site]

                await wait_until(other_leads)
                cfg = {**LM_CONFIG, "tree": {"id": "grid", "max_current": 10}}
                async with other.api() as api:
                    r = await api.put(f"/api/v1/sites/{site}/load-management", json=cfg)
                    assert r.status_code == 200, r.text
                await wait_for(lambda: x.current_limit(1) == 10, PATIENCE)
            finally:
                lead.proc.send_signal(signal.SIGCONT)
            sent = len(tx_limits(x))

            async def lead_gave_up() -> bool:
                return (await lead.status())["sites_led"] == []

            await wait_until(lead_gave_up)
            # the charger reports through its node; the site is still run by the new leader
            await x.meter_values(1, wh=1000, amps_per_phase=9.5)
            async with other.api() as api:
                status = (await api.get(f"/api/v1/sites/{site}/load-management/status")).json()
                assert status["nodes"][0]["limit"] == 10
            # nothing above 10 A reached the charger after the new leader's 10 A
            assert all(limit <= 10 for limit in tx_limits(x)[sent - 1 :])
            assert x.current_limit(1) == 10
        finally:
            await x.close()
