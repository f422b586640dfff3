"""Nodes of a HARMON-E cluster as real processes (`harmone serve --cluster`) on 127.0.0.1,
sharing a fresh PostgreSQL database and the local NATS server under a cluster name of their
own (so that runs never hear each other)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from support import PATIENCE, strict_run, wait_for

from harmone.services.accounts import Accounts
from harmone.store import Store

NATS_URL = os.environ.get("HARMONE_TEST_NATS", "nats://127.0.0.1:4222")
PG_SERVER = os.environ.get("HARMONE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def need_nats() -> None:
    """Skip (fail in a strict run) when no NATS server answers at NATS_URL."""
    parts = urlsplit(NATS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), 2):
            pass
    except OSError as exc:
        message = f"NATS not available at {NATS_URL}: {exc}"
        if strict_run():
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class ClusterDb:
    url: str
    token: str


@contextlib.asynccontextmanager
async def cluster_database() -> AsyncIterator[ClusterDb]:
    """A fresh PostgreSQL database with the schema, an admin and a token; dropped after."""
    name = f"harmone_cluster_{secrets.token_hex(4)}"
    server = PG_SERVER.rsplit("/", 1)[0]
    try:
        conn = await asyncpg.connect(PG_SERVER, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL not available at {PG_SERVER}: {exc}"
        if strict_run():
            pytest.fail(message)
        pytest.skip(message)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = f"{server}/{name}"
    try:
        store = await Store.open(url)
        try:
            await store.migrate()
            accounts = Accounts(store)
            await accounts.create_user("admin@example.com", "s3cret-passw0rd!", role="admin")
            token = await accounts.create_token("admin@example.com")
        finally:
            await store.close()
        yield ClusterDb(url, token)
    finally:
        conn = await asyncpg.connect(PG_SERVER, timeout=5)
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await conn.close()


@dataclass
class Node:
    """One `harmone serve --cluster` process."""

    id: str
    proc: asyncio.subprocess.Process
    base: str  # ws://127.0.0.1:PORT
    token: str
    log: list[str] = field(default_factory=list)
    _drain: asyncio.Task[None] | None = None

    @property
    def http(self) -> str:
        return self.base.replace("ws://", "http://")

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.http, headers={"Authorization": f"Bearer {self.token}"}, timeout=PATIENCE
        )

    def ocpp_url(self, site_uid: str) -> str:
        return f"{self.base}/{site_uid}"

    async def status(self) -> dict[str, Any]:
        async with self.api() as api:
            r = await api.get("/api/v1/cluster")
            assert r.status_code == 200, r.text
            result: dict[str, Any] = r.json()
            return result

    def kill(self) -> None:
        """kill -9: no goodbye, no lease released, sockets dropped by the kernel."""
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), PATIENCE)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)


async def start_node(db: ClusterDb, name: str, node_id: str) -> Node:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harmone",
        "serve",
        "--db",
        db.url,
        "--port",
        "0",
        "--cluster",
        NATS_URL,
        "--cluster-name",
        name,
        "--node-id",
        node_id,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    log: list[str] = []
    base = None
    while base is None:
        line = (await asyncio.wait_for(proc.stderr.readline(), PATIENCE)).decode()
        log.append(line)
        assert line, f"node {node_id} exited before it was ready:\n{''.join(log)}"
        m = re.search(r"cloud OCPP URLs start with (ws://\S+)", line)
        base = m.group(1) if m else None
    node = Node(node_id, proc, base, db.token, log)

    async def drain() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            log.append(line.decode())

    node._drain = asyncio.create_task(drain())
    return node


@contextlib.asynccontextmanager
async def cluster(count: int) -> AsyncIterator[list[Node]]:
    """`count` nodes on one fresh database, each seeing all the others."""
    need_nats()
    name = f"t{secrets.token_hex(4)}"
    async with cluster_database() as db:
        nodes: list[Node] = []
        try:
            for i in range(count):
                nodes.append(await start_node(db, name, f"{name}-n{i + 1}"))
            ids = {n.id for n in nodes}
            for node in nodes:
                await wait_until(lambda n=node: _sees(n, ids))
            yield nodes
        finally:
            for node in nodes:
                await node.stop()
            await _delete_bucket(f"{name}_site_leases")


async def _sees(node: Node, ids: set[str]) -> bool:
    status = await node.status()
    return ids <= {n["id"] for n in status["nodes"]}


async def wait_until(check: Any, timeout: float = PATIENCE) -> None:
    """Wait for an async predicate (polled, bounded by `timeout`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await check():
            return
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def _delete_bucket(bucket: str) -> None:
    import nats

    with contextlib.suppress(Exception):
        nc = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=0)
        try:
            await nc.jetstream().delete_key_value(bucket)
        finally:
            await nc.close()


__all__ = ["ClusterDb", "Node", "cluster", "need_nats", "start_node", "wait_for", "wait_until"]
