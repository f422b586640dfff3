"""Running HARMON-E under uvicorn: `harmone serve`, and an in-process server for tests."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import ipaddress
import logging
import signal
import socket
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass

import uvicorn

from harmone.config import ServerConfig
from harmone.errors import ConfigError
from harmone.store import Store
from harmone.web.app import HarmoneApp, Runtime, create_app, open_store
from harmone.web.front_door import front_door_for
from harmone.web.metrics_listener import metrics_server_config

__all__ = ["RunningServer", "bind_socket", "running_server", "serve"]

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    # uvicorn re-raises the captured SIGTERM/SIGINT after shutting down, which would make the
    # process die by signal; `harmone serve` must close cleanly and exit 0 instead, so the
    # signals are handled in `serve()`.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def freeze_heap_when_started(server: uvicorn.Server) -> None:
    """Once start-up is over, move everything allocated so far (modules, schemas, the
    directory cache) out of the garbage collector's reach (`gc.freeze`): a full collection
    then walks only what was made since, and a reconnect storm, which allocates enough to
    trigger several, no longer stops the event loop for 100 ms each (docs/performance.md)."""
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.05)
    gc.freeze()


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front, so the real port is known before start-up."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = (
                " (is HARMON-E or another program already running there? Stop it, or choose "
                "another port with --port or HARMONE_PORT)"
            )
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def _listen_url(sock: socket.socket, host: str, tls: bool = False) -> str:
    port = sock.getsockname()[1]
    shown = host
    if host in ("0.0.0.0", "::", ""):
        shown = socket.gethostname()
    elif ":" in host:
        shown = f"[{host}]"
    return f"{'wss' if tls else 'ws'}://{shown}:{port}"


def _uvicorn_config(app: HarmoneApp, config: ServerConfig) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        lifespan="on",
        # Reads each connection's first request head (with a deadline: uvicorn has none, see
        # head_deadline.py): WebSocket upgrades go to the OCPP relay, outside ASGI; the rest
        # to uvicorn's h11 protocol. The console uses server-sent events, not WebSockets.
        http=front_door_for(lambda: app.endpoint),
        ws="none",
        timeout_graceful_shutdown=max(1, round(config.shutdown_grace)),
        log_config=None,
        access_log=False,
        server_header=False,
        # Checked by ServerConfig already; uvicorn loads them (TLS 1.2 or newer, Python's
        # default for a server context).
        ssl_certfile=config.tls_cert,
        ssl_keyfile=config.tls_key,
        backlog=4096,
    )


@dataclass(slots=True)
class RunningServer:
    app: HarmoneApp
    url: str  # http://host:port (https:// with TLS)
    #: http://host:port of --metrics-listen, when it is on
    metrics_url: str | None = None

    @property
    def runtime(self) -> Runtime:
        assert self.app.runtime is not None
        return self.app.runtime


class _MetricsListen:
    """The --metrics-listen server, bound before anything starts (a busy port fails fast)."""

    def __init__(self, app: HarmoneApp, config: ServerConfig) -> None:
        assert config.metrics_listen is not None
        host, port = config.metrics_listen
        self.sock = bind_socket(host, port)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.sock.getsockname()[1]}"
        self.server = _Server(metrics_server_config(app))
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        log.info("Prometheus metrics also at %s/metrics (no authentication)", self.url)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        self.sock.close()


@contextlib.asynccontextmanager
async def running_server(
    config: ServerConfig, store: Store | None = None
) -> AsyncIterator[RunningServer]:
    """Run HARMON-E inside the current event loop (tests, benchmarks, a gateway box, which
    opens its `store` first). The server owns `store` from here on and closes it."""
    try:
        sock = bind_socket(config.host, config.port)
    except BaseException:
        if store is not None:
            await store.close()
        raise
    app = create_app(config, lambda: _listen_url(sock, config.host, config.tls), store)
    try:
        metrics = _MetricsListen(app, config) if config.metrics_listen else None
    except BaseException:
        sock.close()
        if store is not None:
            await store.close()
        raise
    server = _Server(_uvicorn_config(app, config))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise ConfigError("server stopped during start-up")
            await asyncio.sleep(0.01)
        if metrics is not None:
            metrics.start()
        port = sock.getsockname()[1]
        scheme = "https" if config.tls else "http"
        yield RunningServer(
            app, f"{scheme}://{config.host}:{port}", metrics.url if metrics else None
        )
    finally:
        if metrics is not None:
            await metrics.stop()
        server.should_exit = True
        await task
        sock.close()


def serve(config: ServerConfig) -> int:
    """`harmone serve`: run until SIGINT/SIGTERM, close every connection, exit 0.

    Runs on uvloop when it is installed (its transports and callbacks are C, which matters
    for a relay that is mostly socket events), else on asyncio's own loop.
    """
    raise_fd_limit(log)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; still optional
        return asyncio.run(_serve(config))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(config))


def raise_fd_limit(logger: logging.Logger, wanted: int = 65536) -> int:
    """Lift the soft limit on open files towards `wanted` (each charger takes two: its own
    connection and its CPMS's); returns the limit in force, and says when it is low."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-file limit from %d: %s", soft, exc)
    if soft < wanted:
        logger.warning(
            "open-file limit is %d: HARMON-E can relay about %d chargers (each needs two "
            "connections); raise the hard limit (ulimit -Hn, LimitNOFILE=) for more",
            soft,
            max(0, (soft - 100) // 2),
        )
    else:
        logger.info("open-file limit %d: room for about %d chargers", soft, (soft - 100) // 2)
    return int(soft)


async def _serve(config: ServerConfig) -> int:
    if config.cluster is not None:
        from harmone.cluster.probe import probe_nats  # no NATS client is imported by it

        await probe_nats(config.cluster.nats_url)
    store = await open_store(config.db_url)
    try:
        sock = bind_socket(config.host, config.port)
    except BaseException:
        await store.close()
        raise
    app = create_app(config, lambda: _listen_url(sock, config.host, config.tls), store)
    try:
        metrics = _MetricsListen(app, config) if config.metrics_listen else None
    except BaseException:
        sock.close()
        await store.close()
        raise
    server = _Server(_uvicorn_config(app, config))
    loop = asyncio.get_running_loop()

    def stop(signame: str) -> None:
        if server.should_exit:
            server.force_exit = True
        log.info("%s received: closing every charger and CPMS connection", signame)
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig.name)
    if metrics is not None:
        metrics.start()
    freezer = asyncio.create_task(freeze_heap_when_started(server))
    try:
        await server.serve(sockets=[sock])
    finally:
        freezer.cancel()
        if metrics is not None:
            await metrics.stop()
        sock.close()
    if not server.started:
        return 1
    log.info("HARMON-E stopped")
    return 0
