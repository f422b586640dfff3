"""Gateway link catch-up: how fast a box's outbox drains into the cloud after a WAN outage.

    python bench/gateway_bench.py [--events 5000]

A cloud HARMON-E and a paired box run in this process on 127.0.0.1 (the box's link through
a TCP proxy standing for the WAN). With the WAN cut, `--events` connection attempts are
logged on the box (as its relay would log them) and the box's reporter puts them in its
outbox; then the WAN is restored and the time until the cloud's connection log holds all of
them is measured. It also measures how long a site edit in
the cloud takes to be in force on the box. Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from gateway_support import box, box_config, free_port, proxy_to
from sqlalchemy import func, select

from harmone.config import ServerConfig
from harmone.store.models import AttemptRow
from harmone.store.records import Attempt
from harmone.web.serve import RunningServer, running_server


@contextlib.asynccontextmanager
async def _cloud(tmp: Path) -> AsyncIterator[RunningServer]:
    config = ServerConfig(db_url=f"sqlite:///{tmp / 'cloud.db'}", host="127.0.0.1", port=0)
    async with running_server(config) as srv:
        yield srv


async def _until(check: object, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        await asyncio.sleep(0.01)


async def main(events: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        async with _cloud(tmp) as srv, proxy_to(int(srv.url.rsplit(":", 1)[1])) as wan:
            rt = srv.runtime
            site = await rt.sites.create(
                "Bench", "gateway", gateway_host=f"127.0.0.1:{free_port()}"
            )
            code = await rt.gateways.create_pairing_code(site.uid)
            cfg = box_config(tmp, f"http://127.0.0.1:{wan.port}", code.code)
            async with box(cfg) as b:
                await _until(lambda: _online(b))
                started = time.monotonic()
                await rt.sites.update(site.uid, {"name": "Bench 2"})

                async def renamed() -> bool:
                    return (await b.runtime.sites.get(site.uid)).name == "Bench 2"

                await _until(renamed)
                print(f"cloud edit in force on the box: {time.monotonic() - started:.3f} s")

                wan.cut()
                await _until(lambda: _offline(b))
                now = datetime.now(UTC)
                attempts = [
                    Attempt(
                        now + timedelta(microseconds=i),
                        site.uid,
                        f"CP{i % 50}",
                        "10.0.0.9",
                        False,
                        "wrong password",
                    )
                    for i in range(events)
                ]
                await b.runtime.store.attempts.add(attempts, keep_per_site=events + 10)

                async def enqueued() -> bool:
                    return await b.runtime.store.box.backlog() >= events

                await _until(enqueued)
                print(f"outbox: {events} events queued while the WAN is down")
                started = time.monotonic()
                wan.restore()

                async def caught_up() -> bool:
                    async with rt.store.transaction() as session:
                        count = await session.scalar(
                            select(func.count()).where(AttemptRow.site_uid == site.uid)
                        )
                    return (count or 0) >= events

                await _until(caught_up, 600)
                took = time.monotonic() - started
                print(
                    f"catch-up after the outage: {events} events in {took:.2f} s "
                    f"({events / took:.0f} events/s, reconnect included)"
                )


async def _online(b: object) -> bool:
    return b.link.state == "online"  # type: ignore[attr-defined,no-any-return]


async def _offline(b: object) -> bool:
    return b.link.state == "offline"  # type: ignore[attr-defined,no-any-return]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    asyncio.run(main(parser.parse_args().events))
