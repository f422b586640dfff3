"""Reconnect-storm processes: a counting CPMS, a HARMON-E server and thousands of raw chargers.

    python bench/storm.py cpms [--port P] [--handshake-delay S]
    python bench/storm.py harmone --db URL [--port P] [--relay NAME=VALUE ...]
    python bench/storm.py chargers --url WS_URL --count N [--ramp S]

Each role runs in its own process (tests/relay/test_storm.py starts them), so that HARMON-E's memory
and the latency of its API are its own and not the load generator's. Every role prints one
JSON line on stdout when it is ready, stops on SIGTERM/SIGINT and, in any case, after
--lifetime seconds, and only ever uses 127.0.0.1.

cpms      A minimal CPMS. Answers every CALL with `[3, id, {"currentTime": CPMS_TIME}]` (a
          fixed time, so that a charger can tell the CPMS's answer from HARMON-E's local one)
          and counts the WebSocket handshakes in progress: each is held for
          --handshake-delay seconds, so that how many HARMON-E dials at once becomes visible.
          `GET /stats` answers {"in_progress", "peak", "handshakes", "connected"} as JSON;
          `GET /stats?reset` also starts a new peak.
harmone   `running_server` with the given RelayConfig fields (e.g. --relay backoff_max=2);
          prints {"url", "pid"}.
measure   The storm figures of issue 11, each in fresh processes: N known chargers (already in
          the database, as after a restart), N first-time chargers, and `--big` known chargers
          which then send a Heartbeat every 10 s for `--soak` seconds; for each, the seconds
          until every charger was accepted and until every CPMS link was up, and the API's
          latency meanwhile (`GET /api/v1/sites/{uid}/chargers` and `/healthz`, p50/p99/max).
          HARMON-E runs on uvloop, as `harmone serve` does.
chargers  N chargers (raw `websockets` clients, not the `ocpp` package: a few thousand of those
          in one process would measure the simulator). Each starts after a random delay within
          --ramp seconds and reconnects by itself, after another random delay within --ramp,
          whenever its connection drops. Commands on stdin, one per line, each answered by one
          JSON line: `status`, `heartbeat` (every connected charger sends a Heartbeat and waits
          for the answer), `drops` (per charger, how often its connection closed and how often
          it connected again since the last `drops`: {"closed": {id: n}, "reconnected": {id:
          n}}), `quit`. Unprompted it prints {"event": "all_connected", "seconds"}
          once every charger is connected for the first time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import gc
import json
import logging
import os
import random
import resource
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

#: The currentTime the storm CPMS answers every CALL with.
CPMS_TIME = "2000-01-01T00:00:00.000Z"
SUBPROTOCOLS = ("ocpp1.6", "ocpp2.0.1")


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def raise_fd_limit(needed: int) -> None:
    """Every connection is a file descriptor: lift the soft limit towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


async def until_stopped(lifetime: float) -> None:
    """Return on SIGTERM/SIGINT or after `lifetime` seconds, whichever comes first."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), lifetime)


# -- cpms --
@dataclasses.dataclass
class CpmsCounters:
    in_progress: int = 0
    peak: int = 0
    handshakes: int = 0
    connected: int = 0


async def run_cpms(port: int, handshake_delay: float, lifetime: float) -> None:
    counters = CpmsCounters()

    async def process_request(conn: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith("/stats"):
            body = json.dumps(dataclasses.asdict(counters))
            if request.path.endswith("?reset"):
                counters.peak = counters.in_progress
            return conn.respond(200, body + "\n")
        counters.in_progress += 1
        counters.peak = max(counters.peak, counters.in_progress)
        try:
            await asyncio.sleep(handshake_delay)
        finally:
            counters.in_progress -= 1
        counters.handshakes += 1
        return None

    async def handler(conn: ServerConnection) -> None:
        counters.connected += 1
        try:
            async for message in conn:
                if isinstance(message, str) and message.lstrip("[ ").startswith("2"):
                    msg_id = json.loads(message)[1]
                    await conn.send(json.dumps([3, msg_id, {"currentTime": CPMS_TIME}]))
        except ConnectionClosed:
            pass
        finally:
            counters.connected -= 1

    async with serve(
        handler,
        "127.0.0.1",
        port,
        subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
        process_request=process_request,
        compression=None,
        ping_interval=None,
        # the default backlog (100) would drop SYNs of an unbounded dial burst and make it
        # look like a 1 s TCP retransmit rather than what HARMON-E does
        backlog=4096,
    ) as server:
        emit(port=server.sockets[0].getsockname()[1])
        await until_stopped(lifetime)


# -- harmone --
def relay_config(pairs: list[str]) -> Any:
    """A RelayConfig from NAME=VALUE pairs, each converted to the type of the field's default
    (so that fields added later need no change here)."""
    from harmone.config import RelayConfig

    defaults = RelayConfig()
    names = {f.name for f in dataclasses.fields(RelayConfig)}
    values: dict[str, Any] = {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        if name not in names:
            raise SystemExit(f"storm.py: RelayConfig has no field {name!r}")
        default = getattr(defaults, name)
        kind: Callable[[str], Any] = str if default is None else type(default)
        values[name] = Path(raw) if isinstance(default, Path) else kind(raw)
    return RelayConfig(**values)


async def run_harmone(db_url: str, port: int, relay: list[str], lifetime: float) -> None:
    """HARMON-E in this process (the caller picks the event loop)."""
    from harmone.config import ServerConfig
    from harmone.web.serve import running_server

    config = ServerConfig(
        db_url=db_url, host="127.0.0.1", port=port, relay=relay_config(relay), shutdown_grace=2
    )
    async with running_server(config) as srv:
        gc.freeze()  # as `harmone serve` does once started (harmone.web.serve)
        emit(url=srv.url, pid=os.getpid())
        await until_stopped(lifetime)


# -- chargers --
class Fleet:
    """N raw chargers that keep themselves connected."""

    def __init__(self, url: str, count: int, prefix: str, ramp: float, offset: int = 0) -> None:
        self.url = url.rstrip("/")
        self.count = count
        self.prefix = prefix
        self.offset = offset
        self.ramp = ramp
        self.conns: dict[int, ClientConnection] = {}
        self.handshakes = 0
        self.failures: collections.Counter[str] = collections.Counter()
        #: Per charger, since the last `drops` command: connections that closed while the
        #: fleet was not stopping, and handshakes after its first one (reconnections).
        self.closed: collections.Counter[str] = collections.Counter()
        self.reconnected: collections.Counter[str] = collections.Counter()
        self.stopping = False
        self.all_connected = asyncio.Event()
        self._rng = random.Random(1)

    async def keep_connected(self, i: int) -> None:
        await asyncio.sleep(self._rng.uniform(0, self.ramp))
        name = f"{self.prefix}{self.offset + i:05d}"
        connected_before = False
        while not self.stopping:
            try:
                ws = await connect(
                    f"{self.url}/{name}",
                    subprotocols=[Subprotocol("ocpp1.6")],
                    open_timeout=30,
                    ping_interval=None,
                    compression=None,
                    close_timeout=2,
                )
            except InvalidStatus as exc:
                self.failures[f"HTTP {exc.response.status_code}"] += 1
            except (OSError, TimeoutError, ConnectionClosed) as exc:
                self.failures[type(exc).__name__] += 1
            except Exception as exc:  # a load generator counts what it cannot help
                self.failures[type(exc).__name__] += 1
            else:
                self.handshakes += 1
                if connected_before:
                    self.reconnected[name] += 1
                connected_before = True
                self.conns[i] = ws
                if len(self.conns) == self.count:
                    self.all_connected.set()
                await ws.wait_closed()
                if self.conns.get(i) is ws:
                    del self.conns[i]
                if not self.stopping:
                    self.closed[name] += 1
            if not self.stopping:
                await asyncio.sleep(self._rng.uniform(0.1, max(0.2, self.ramp)))

    async def heartbeat(self, timeout: float = 20.0) -> dict[str, int]:
        """Every connected charger sends one Heartbeat; whose answers came from the CPMS?"""
        outcome: collections.Counter[str] = collections.Counter()

        async def one(i: int, ws: ClientConnection) -> None:
            try:
                await ws.send(f'[2,"hb-{i}","Heartbeat",{{}}]')
                answer = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            except (ConnectionClosed, TimeoutError, ValueError) as exc:
                outcome[f"failed: {type(exc).__name__}"] += 1
                return
            if answer[:2] != [3, f"hb-{i}"]:
                outcome["unexpected"] += 1
            elif answer[2].get("currentTime") == CPMS_TIME:
                outcome["cpms"] += 1
            else:
                outcome["local"] += 1

        await asyncio.gather(*(one(i, ws) for i, ws in list(self.conns.items())))
        return dict(outcome)

    async def soak(self, every: float, duration: float) -> dict[str, int]:
        """Every connected charger sends a Heartbeat every `every` seconds for `duration`;
        how many were answered, and how many failed."""
        outcome: collections.Counter[str] = collections.Counter()
        end = time.perf_counter() + duration

        async def one(i: int, ws: ClientConnection) -> None:
            await asyncio.sleep(self._rng.uniform(0, every))
            n = 0
            while time.perf_counter() < end:
                n += 1
                try:
                    await ws.send(f'[2,"s{i}-{n}","Heartbeat",{{}}]')
                    answer = json.loads(await asyncio.wait_for(ws.recv(), every))
                    outcome["answered" if answer[:2] == [3, f"s{i}-{n}"] else "unexpected"] += 1
                except (ConnectionClosed, TimeoutError, ValueError) as exc:
                    outcome[f"failed: {type(exc).__name__}"] += 1
                    return
                await asyncio.sleep(every)

        await asyncio.gather(*(one(i, ws) for i, ws in list(self.conns.items())))
        return dict(outcome)

    def drops(self) -> dict[str, Any]:
        """Per charger, closed connections and reconnections since the last call."""
        report = {"closed": dict(self.closed), "reconnected": dict(self.reconnected)}
        self.closed.clear()
        self.reconnected.clear()
        return report

    def status(self) -> dict[str, Any]:
        return {
            "connected": len(self.conns),
            "handshakes": self.handshakes,
            "failures": dict(self.failures),
        }

    async def close(self) -> None:
        self.stopping = True
        await asyncio.gather(
            *(ws.close() for ws in list(self.conns.values())), return_exceptions=True
        )


async def run_chargers(
    url: str, count: int, prefix: str, ramp: float, lifetime: float, offset: int = 0
) -> None:
    fleet = Fleet(url, count, prefix, ramp, offset)
    start = time.perf_counter()
    tasks = [asyncio.create_task(fleet.keep_connected(i)) for i in range(count)]

    async def announce() -> None:
        await fleet.all_connected.wait()
        emit(event="all_connected", seconds=round(time.perf_counter() - start, 3))

    async def commands() -> None:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
        )
        try:
            while line := (await reader.readline()).decode().strip():
                if line == "status":
                    emit(**fleet.status())
                elif line == "heartbeat":
                    emit(event="heartbeat", **await fleet.heartbeat())
                elif line.startswith("soak "):
                    every, duration = (float(x) for x in line.split()[1:3])
                    emit(event="soak", **await fleet.soak(every, duration))
                elif line == "drops":
                    emit(event="drops", **fleet.drops())
                elif line == "quit":
                    return
                else:
                    emit(error=f"unknown command {line!r}")
        finally:
            transport.close()

    background = [asyncio.create_task(announce())]
    jobs: list[Awaitable[None]] = [commands(), until_stopped(lifetime)]
    _, pending = await asyncio.wait(
        [asyncio.ensure_future(j) for j in jobs], return_when=asyncio.FIRST_COMPLETED
    )
    for task in [*pending, *background]:
        task.cancel()
    await fleet.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, *pending, *background, return_exceptions=True)
    emit(event="closed", **fleet.status())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lifetime", type=float, default=300.0, help="stop after this long")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("cpms")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--handshake-delay", type=float, default=0.02)
    p = sub.add_parser("harmone")
    p.add_argument("--db", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--relay", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop, as harmone serve does")
    p = sub.add_parser("measure")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--big", type=int, default=10000)
    p.add_argument("--soak", type=float, default=60.0)
    p.add_argument("--only", default="known,first,big", help="which storms, comma-separated")
    p = sub.add_parser("chargers")
    p.add_argument("--url", required=True, help="the site's OCPP URL")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--prefix", default="S")
    p.add_argument("--ramp", type=float, default=1.0)
    p.add_argument("--offset", type=int, default=0, help="number of the first charger")
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    raise_fd_limit(65536)
    if args.role == "cpms":
        asyncio.run(run_cpms(args.port, args.handshake_delay, args.lifetime))
    elif args.role == "harmone":
        main = run_harmone(args.db, args.port, args.relay, args.lifetime)
        if args.uvloop:
            import uvloop

            uvloop.run(main)
        else:
            asyncio.run(main)
    elif args.role == "measure":
        from storm_measure import measure_all

        asyncio.run(measure_all(Path(__file__), args.count, args.big, args.soak, args.only))
    else:
        asyncio.run(
            run_chargers(args.url, args.count, args.prefix, args.ramp, args.lifetime, args.offset)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
