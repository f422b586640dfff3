"""How long HARMON-E's deadlines take to act, against the time they are configured for.

    python bench/deadlines_bench.py [--repeat 5]

The tests check *that* each deadline acts (on a manual clock where they can); this measures
*when*, on this machine, with real time:

* a meter read against a meter that accepts the request and never answers (`timeout`);
* a polled meter that never answers, until its node is reported failed (`max_age`);
* `MeterPoller.stop()` while every read hangs (it cancels them, it does not wait);
* the request-head deadline of the OCPP endpoint: a client dribbling its upgrade request one
  byte at a time and one that sends nothing, until HARMON-E closes them (`head_timeout`).

Each row prints the configured time and the min / median / max measured over --repeat runs.
Only 127.0.0.1 is used; HARMON-E runs in this process on a temporary SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from harmone.config import ServerConfig
from harmone.loadmgmt.meters import MeterConfig, MeterNoAnswer, MeterPoller, ModbusMeterReader
from harmone.web.head_deadline import HeadDeadlineProtocol
from harmone.web.serve import running_server

READ_TIMEOUT = 0.2
POLL_INTERVAL = 0.05
MAX_AGE = 0.3
HEAD_TIMEOUT = 1.0


@contextlib.asynccontextmanager
async def silent_meter() -> AsyncIterator[int]:
    """A TCP server that takes requests and never answers; yields its port."""
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            await reader.read()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def meter_read(port: int) -> float:
    reader = ModbusMeterReader(MeterConfig("n", "127.0.0.1", port=port, timeout=READ_TIMEOUT))
    start = time.perf_counter()
    try:
        await reader.read_once()
    except MeterNoAnswer:
        return time.perf_counter() - start
    finally:
        await reader.aclose()
    raise SystemExit("the silent meter answered")


async def meter_failed(port: int) -> float:
    failed = asyncio.Event()
    cfg = MeterConfig(
        "n",
        "127.0.0.1",
        port=port,
        poll_interval=POLL_INTERVAL,
        timeout=READ_TIMEOUT,
        failures_before_failed=1000,
        max_age=MAX_AGE,
    )
    poller = MeterPoller([cfg], lambda m: failed.set() if m.failed else None)
    start = time.perf_counter()
    poller.start()
    try:
        await failed.wait()
        return time.perf_counter() - start
    finally:
        await poller.stop()


async def poller_stop(port: int) -> float:
    configs = [MeterConfig(f"n{i}", "127.0.0.1", port=port, timeout=3600.0) for i in range(3)]
    poller = MeterPoller(configs, lambda m: None)
    poller.start()
    await asyncio.sleep(0.2)  # the reads are under way (a benchmark may wait; a test may not)
    start = time.perf_counter()
    await poller.stop()
    return time.perf_counter() - start


async def head_deadline(port: int, path: str, dribble: bool) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
    ).encode()
    start = time.perf_counter()
    try:
        for i in range(len(request) - 1 if dribble else 0):
            if reader.at_eof():
                break
            try:
                writer.write(request[i : i + 1])
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.05)
        await reader.read()
        return time.perf_counter() - start
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def repeat(times: int, run: Callable[[], Awaitable[float]]) -> list[float]:
    return [await run() for _ in range(times)]


def row(what: str, configured: float, measured: list[float]) -> None:
    print(
        f"{what:<44} {configured:>8.2f} {min(measured):>8.3f} "
        f"{statistics.median(measured):>8.3f} {max(measured):>8.3f}"
    )


async def main(times: int) -> None:
    print(f"{'deadline':<44} {'set s':>8} {'min s':>8} {'median':>8} {'max s':>8}")
    async with silent_meter() as port:
        row(
            "meter read, no answer (timeout)",
            READ_TIMEOUT,
            await repeat(times, lambda: meter_read(port)),
        )
        row(
            f"polled meter failed (max_age, every {POLL_INTERVAL:g} s)",
            MAX_AGE,
            await repeat(times, lambda: meter_failed(port)),
        )
        row("poller stop() while 3 reads hang", 0.0, await repeat(times, lambda: poller_stop(port)))
    HeadDeadlineProtocol.head_timeout = HEAD_TIMEOUT
    with tempfile.TemporaryDirectory() as tmp:
        config = ServerConfig(db_url=f"sqlite:///{Path(tmp) / 'h.db'}", host="127.0.0.1", port=0)
        async with running_server(config) as srv:
            port = int(srv.url.rsplit(":", 1)[1])
            path = "/no-such-site/SLOW"
            row(
                "request head dribbled byte by byte, closed",
                HEAD_TIMEOUT,
                await repeat(times, lambda: head_deadline(port, path, dribble=True)),
            )
            row(
                "request head never sent, closed",
                HEAD_TIMEOUT,
                await repeat(times, lambda: head_deadline(port, path, dribble=False)),
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per row")
    args = parser.parse_args()
    # the meters' warnings and pymodbus' chatter are what is measured here, not news
    logging.basicConfig(level=logging.CRITICAL)
    asyncio.run(main(args.repeat))
    sys.exit(0)
