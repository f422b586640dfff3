"""The cluster's parts without NATS: typed events across the wire, the node directory, the
fencing rule, and what `harmone serve --cluster` refuses."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import PASSWORD, api_client, client_for, harmone_server

from harmone.cluster.codec import decode_observe, encode_observe
from harmone.cluster.directory import ChargerPlace, NodeDirectory
from harmone.config import ClusterConfig, ServerConfig
from harmone.errors import ConfigError, LeaseLost
from harmone.ocpp.effects import Observe
from harmone.ocpp.events import interpret
from harmone.services.accounts import Accounts
from harmone.sim import SimulatedCharger

_spec = importlib.util.spec_from_file_location(
    "events_cases", Path(__file__).parents[1] / "pure" / "test_events.py"
)
assert _spec is not None and _spec.loader is not None
_cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cases)
CASES: list[Any] = _cases.CASES


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_watched_event_crosses_nodes_unchanged(case: Any) -> None:
    _, version, sender, kind, action, payload, request, _ = case
    events = interpret(version, sender, kind, action, payload, request)
    obs = Observe(sender, kind, action, "[…]", events)
    back = decode_observe(json.loads(json.dumps(encode_observe(obs))))
    assert back.events == events
    assert (back.sender, back.type, back.action) == (sender, kind, action)


def test_an_unknown_event_type_is_refused() -> None:
    raw = {"sender": "charger", "type": 2, "action": "X", "events": [{"t": "Popen", "f": {}}]}
    with pytest.raises(ValueError, match="not an OCPP event type"):
        decode_observe(raw)


def test_the_directory_follows_heartbeats_takeovers_and_silence() -> None:
    d = NodeDirectory("a", heartbeat=1.0)
    d.beat("b", 0.0, [("S", "CP1", "1.6"), ("S", "CP2", "2.0.1")])
    d.beat("c", 0.0, [])
    assert d.holder("S", "CP1") == ChargerPlace("b", "1.6")
    d.taken("c", "S", "CP1", "1.6")  # CP1 reconnected on c
    d.left("b", "S", "CP1")  # b's late "left" must not undo it
    assert d.holder("S", "CP1") == ChargerPlace("c", "1.6")
    # b's next heartbeat no longer lists CP1; a stale one that still did would not move it back
    d.beat("b", 1.0, [("S", "CP1", "1.6"), ("S", "CP2", "2.0.1")])
    assert d.holder("S", "CP1") == ChargerPlace("c", "1.6")
    assert set(d.of_site("S")) == {"CP1", "CP2"}
    assert [n.id for n in d.alive_nodes(3.5)] == ["b"]  # c silent for 3.5 s > 3 beats
    d.touch("c", 4.0, 0)  # a heartbeat without the list: alive again, places kept
    assert [n.id for n in d.alive_nodes(4.0)] == ["b", "c"]
    assert d.holder("S", "CP1") == ChargerPlace("c", "1.6")
    d.gone("c")
    assert d.holder("S", "CP1") is None and d.holder("S", "CP2") is not None


def test_a_stale_fencing_token_is_refused_at_the_charger_s_node() -> None:
    from harmone.cluster.leases import SiteLeases

    leases = SiteLeases(None, "bucket", "n1", 3.0, lambda: 0.0)  # type: ignore[arg-type]
    leases.admit("S", 5)
    leases.admit("S", 9)  # a newer holder
    with pytest.raises(LeaseLost, match="older than 9"):
        leases.admit("S", 5)  # the old holder, after a pause
    leases.admit("S", 9)
    leases.admit("T", 1)  # per site


def test_a_lease_is_not_used_once_it_could_not_be_renewed_in_time() -> None:
    from harmone.cluster.leases import Lease, SiteLeases

    now = [100.0]
    leases = SiteLeases(None, "bucket", "n1", 3.0, lambda: now[0])  # type: ignore[arg-type]
    leases.held["S"] = Lease(epoch=7, revision=7, renewed=100.0)
    assert leases.valid("S") == 7
    now[0] = 102.3  # 0.8 × ttl = 2.4 s: still ours
    assert leases.valid("S") == 7
    now[0] = 102.5  # the KV may free it at 103: stop before anyone else may take it
    assert leases.valid("S") is None
    assert leases.holds("S")  # held (its chargers' events still come here), not acted on


def test_cluster_needs_postgresql_and_a_nats_url() -> None:
    node = ClusterConfig("nats://127.0.0.1:4222", "n1")
    with pytest.raises(ConfigError, match="needs a PostgreSQL --db"):
        ServerConfig(db_url="sqlite:///x.db", cluster=node)
    ServerConfig(db_url="postgresql://postgres@127.0.0.1/test", cluster=node)
    with pytest.raises(ConfigError, match="nats://HOST:PORT"):
        ClusterConfig("127.0.0.1:4222", "n1")
    with pytest.raises(ConfigError, match="--node-id"):
        ClusterConfig("nats://127.0.0.1:4222", "a.b")


async def test_serve_with_cluster_and_sqlite_says_why_and_exits_2(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harmone",
        "serve",
        "--db",
        f"sqlite:///{tmp_path / 'h.db'}",
        "--cluster",
        "nats://127.0.0.1:4222",
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "--cluster needs a PostgreSQL --db" in err.decode()


def test_a_single_node_never_imports_nats() -> None:
    code = (
        "import sys, harmone.cli, harmone.web.app, harmone.web.serve; "
        "assert not [m for m in sys.modules if m == 'nats' or m.startswith('nats.')], 'nats'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_serve_with_an_unreachable_nats_says_why_and_exits_2(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harmone",
        "serve",
        "--db",
        "postgresql://postgres@127.0.0.1:5432/test",
        "--cluster",
        f"nats://127.0.0.1:{port}",
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert f"cannot reach NATS at nats://127.0.0.1:{port}" in err.decode()


async def test_calls_to_a_charger_need_a_writer_of_that_site(tmp_path: Path) -> None:
    """The calls endpoint is not in the OpenAPI document, so the route-wide security tests do
    not see it: its access rules are checked here."""
    async with harmone_server(tmp_path) as srv, await client_for(srv) as admin:
        site = (await admin.post("/api/v1/sites", json={"name": "S", "type": "cloud"})).json()
        other = (await admin.post("/api/v1/sites", json={"name": "O", "type": "cloud"})).json()
        url = f"{srv.url.replace('http', 'ws')}/{site['uid']}"
        path = f"/api/v1/sites/{site['uid']}/chargers/CP-1/calls"
        body = {"action": "GetConfiguration", "payload": {}}
        async with SimulatedCharger(url, "CP-1", "1.6") as sim:
            await sim.boot()
            r = await admin.post(path, json=body)
            assert r.status_code == 200 and "configurationKey" in r.json()["result"]
            async with await client_for(srv, "viewer") as viewer:
                assert (await viewer.post(path, json=body)).status_code == 403
            accounts = Accounts(srv.runtime.store)
            await accounts.create_account(
                "elsewhere@example.com", PASSWORD, role="operator", sites=[other["uid"]]
            )
            async with await api_client(srv, "elsewhere@example.com") as elsewhere:
                assert (await elsewhere.post(path, json=body)).status_code in (403, 404)
            assert (await admin.post(path, json={"action": "Get Config"})).status_code == 422
            assert [a for a, _ in sim.received_calls] == ["GetConfiguration"]
        r = await admin.post(f"/api/v1/sites/{site['uid']}/chargers/NOPE/calls", json=body)
        assert r.status_code == 404
