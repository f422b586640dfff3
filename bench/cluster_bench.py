"""Cluster benchmark: the same chargers on 1 node and on 3 nodes (`harmone serve --cluster`),
one PostgreSQL database and the local NATS, on this machine.

    python bench/cluster_bench.py [--nodes 1,3] [--chargers 300] [--duration 10]

Per cluster size, on a fresh database with one site whose load management is on (so that the
chargers' watched frames cross NATS to the node that runs the site's load manager):

1. connect `--chargers` chargers round robin over the nodes, each sending a BootNotification:
   chargers admitted per second, and each node's resident memory per charger held;
2. every charger in a closed loop of MeterValues (the next as soon as the last is answered)
   for `--duration` seconds: frames answered per second; meanwhile NATS messages and bytes
   (a subscriber on the cluster's subjects) and PostgreSQL commits and rows written (the
   database's pg_stat_database counters), each per charger per minute.

The site has no CPMS (HARMON-E answers), so the frames measure the nodes, not a CPMS. Every
process stops within the run's time budget. Needs PostgreSQL at $HARMONE_TEST_PG's server and
NATS at $HARMONE_TEST_NATS (defaults: the local ones).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sys
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import nats
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from harmone.services.accounts import Accounts
from harmone.store import Store

NATS_URL = os.environ.get("HARMONE_TEST_NATS", "nats://127.0.0.1:4222")
PG = os.environ.get("HARMONE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BOOT = '{"chargePointVendor":"B","chargePointModel":"M"}'
LM = {
    "policy": "equal_share",
    "tree": {"id": "grid", "max_current": 10000},
    "default_charger": {"max_current": 32, "phases": 3},
}


def meter(n: int) -> str:
    return (
        '{"connectorId":1,"meterValue":[{"timestamp":"2026-11-24T10:00:00Z","sampledValue":'
        f'[{{"value":"{n}","measurand":"Energy.Active.Import.Register","unit":"Wh"}}]}}]}}'
    )


async def start_node(db: str, name: str, node_id: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "harmone", "serve", "--db", db,
        "--port", "0", "--cluster", NATS_URL, "--cluster-name", name, "--node-id", node_id,
        "--flood-rate", "100000", "--flood-burst", "100000",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        if not line:
            raise SystemExit(f"node {node_id} did not start")
        m = re.search(r"cloud OCPP URLs start with (ws://\S+)", line)
        if m:
            asyncio.get_running_loop().create_task(_drain(proc))
            return proc, m.group(1)


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stderr is not None
    while await proc.stderr.readline():
        pass


async def call(ws: ClientConnection, n: int, action: str, payload: str) -> None:
    await ws.send(f'[2,"{n}","{action}",{payload}]')
    await ws.recv()


async def run(count: int, chargers: int, duration: float) -> dict[str, Any]:
    name = f"bench{secrets.token_hex(3)}"
    dbname = f"harmone_cluster_{name}"
    conn = await asyncpg.connect(PG)
    await conn.execute(f'CREATE DATABASE "{dbname}"')
    await conn.close()
    db = f"{PG.rsplit('/', 1)[0]}/{dbname}"
    store = await Store.open(db)
    await store.migrate()
    await Accounts(store).create_user("b@example.com", "s3cret-passw0rd!", role="admin")
    token = await Accounts(store).create_token("b@example.com")
    await store.close()
    nodes: list[tuple[asyncio.subprocess.Process, str]] = []
    sockets: list[ClientConnection] = []
    nc = await nats.connect(NATS_URL)
    msgs = [0, 0]
    kinds: dict[str, int] = {}

    async def counted(msg: Any) -> None:
        msgs[0] += 1
        msgs[1] += len(msg.data)
        kind = ".".join(t if i != 2 else "*" for i, t in enumerate(msg.subject.split(".")[1:]))
        kinds[kind] = kinds.get(kind, 0) + 1

    try:
        for i in range(count):  # inside the try: a node that fails to start drops the database
            nodes.append(await start_node(db, name, f"{name}-{i}"))
        http = nodes[0][1].replace("ws://", "http://")
        async with httpx.AsyncClient(
            base_url=http, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as api:
            site = (await api.post("/api/v1/sites", json={"name": "B", "type": "cloud"})).json()
            r = await api.put(f"/api/v1/sites/{site['uid']}/load-management", json=LM)
            assert r.status_code == 200, r.text
            for _ in range(100):  # until a node leads the site
                if (await api.get("/api/v1/cluster")).json()["leases"]:
                    break
                await asyncio.sleep(0.2)
        rss0 = [psutil.Process(p.pid).memory_info().rss for p, _ in nodes]
        t0 = time.perf_counter()
        for i in range(chargers):
            base = nodes[i % count][1]
            ws = await connect(
                f"{base}/{site['uid']}/B{i:05d}",
                subprotocols=[Subprotocol("ocpp1.6")],
                compression=None,
                proxy=None,
                open_timeout=60,
            )
            sockets.append(ws)
        await asyncio.gather(*(call(ws, 0, "BootNotification", BOOT) for ws in sockets))
        admit = chargers / (time.perf_counter() - t0)
        await asyncio.sleep(2)
        rss1 = [psutil.Process(p.pid).memory_info().rss for p, _ in nodes]
        kib = (sum(rss1) - sum(rss0)) / chargers / 1024
        await nc.subscribe(f"{name}.>", cb=counted)
        pg = await asyncpg.connect(db)
        q = (
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM "
            "pg_stat_database WHERE datname = current_database()"
        )
        before = await pg.fetchrow(q)
        done = [0]
        stop_at = time.perf_counter() + duration

        async def loop(ws: ClientConnection) -> None:
            n = 1
            while time.perf_counter() < stop_at:
                await call(ws, n, "MeterValues", meter(n))
                n += 1
                done[0] += 1

        t1 = time.perf_counter()
        await asyncio.gather(*(loop(ws) for ws in sockets))
        took = time.perf_counter() - t1
        await asyncio.sleep(1.5)  # the last batch of state writes
        await pg.execute("SELECT pg_stat_clear_snapshot()")
        after = await pg.fetchrow(q)
        await pg.close()
        per_min = 60 / took / chargers
        return {
            "nodes": count,
            "chargers": chargers,
            "admitted_per_s": round(admit, 1),
            "frames_per_s": round(done[0] / took, 1),
            "rss_kib_per_charger": round(kib, 1),
            "meter_values_per_charger_min": round(done[0] * per_min, 1),
            "nats_msgs_per_charger_min": round(msgs[0] * per_min, 1),
            "nats_bytes_per_msg": round(msgs[1] / max(msgs[0], 1)),
            "nats_msgs_by_subject": kinds,
            "pg_commits_per_charger_min": round((after[0] - before[0]) * per_min, 2),
            "pg_rows_per_charger_min": round((after[1] - before[1]) * per_min, 2),
            "load_avg": round(os.getloadavg()[0], 2),
        }
    finally:
        for ws in sockets:
            await ws.close()
        await nc.close()
        for proc, _ in nodes:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in nodes:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
        conn = await asyncpg.connect(PG)
        await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await conn.close()
        nc2 = await nats.connect(NATS_URL)
        with contextlib.suppress(Exception):
            await nc2.jetstream().delete_key_value(f"{name}_site_leases")
        await nc2.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", default="1,3")
    p.add_argument("--chargers", type=int, default=300)
    p.add_argument("--duration", type=float, default=10.0)
    args = p.parse_args()
    for count in (int(n) for n in args.nodes.split(",")):
        print(json.dumps(await run(count, args.chargers, args.duration)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
