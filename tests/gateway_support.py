"""Test support for gateway sites: a TCP proxy the test controls (the site's WAN), a cloud
with an admin API client, and a box."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from support import FAST_RELAY, harmone_server

from harmone.gateway.box import BoxConfig, RunningBox, running_box
from harmone.services.accounts import Accounts
from harmone.web.serve import RunningServer


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; `cut()` drops every connection and refuses new
    ones (the WAN is down), `restore()` lets them through again. The port stays the same."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.up = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self.up = False
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.up = True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if not self.up:
                        break
                    dst.write(data)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


@contextlib.asynccontextmanager
async def proxy_to(port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def cloud(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, httpx.AsyncClient]]:
    (tmp_path / "cloud").mkdir(exist_ok=True)
    async with harmone_server(tmp_path / "cloud") as srv:
        store = srv.runtime.store
        await Accounts(store).create_user("admin@example.com", "correct horse battery", "admin")
        token = await Accounts(store).create_token("admin@example.com")
        async with httpx.AsyncClient(
            base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as api:
            yield srv, api


def box_config(tmp_path: Path, cloud_url: str | None = None, code: str | None = None) -> BoxConfig:
    (tmp_path / "box").mkdir(parents=True, exist_ok=True)
    return BoxConfig(
        db_url=f"sqlite:///{tmp_path / 'box' / 'box.db'}",
        cloud_url=cloud_url,
        pair_code=code,
        host="127.0.0.1",
        relay=FAST_RELAY,
        shutdown_grace=2.0,
        report_interval=0.2,
        link_backoff_max=0.5,
    )


@contextlib.asynccontextmanager
async def box(cfg: BoxConfig) -> AsyncIterator[RunningBox]:
    async with running_box(cfg) as b:
        yield b


def trust(b: RunningBox) -> ssl.SSLContext:
    """What an installer configures in a charger: the box's own certificate."""
    return ssl.create_default_context(cafile=str(b.cert_file))
