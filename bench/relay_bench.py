"""Relay benchmark: the same charger load sent straight to a CPMS and through HARMON-E.

    python bench/relay_bench.py [--sizes 1,100,1000] [--duration 5]

Three processes: a minimal CPMS (answers every CALL), `harmone serve` on a fresh SQLite file,
and this process driving N simulated chargers, each doing Call -> CallResult round trips one
at a time (OCPP allows one call in flight). For every N it prints p50/p99 round-trip latency
and frames relayed per second for the direct path (baseline) and through HARMON-E, and their
ratio; then HARMON-E's resident memory per connected charger. Only 127.0.0.1 is used, and each
phase stops by itself after --duration seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

METER_PAYLOAD = (
    '{"connectorId":1,"transactionId":42,"meterValue":[{"timestamp":'
    '"2026-11-24T10:00:00Z","sampledValue":[{"value":"1234.5","measurand":'
    '"Energy.Active.Import.Register","unit":"Wh"}]}]}'
)

CPMS_CODE = r"""
import asyncio, re, sys
from websockets.asyncio.server import serve
ENV = re.compile(r'\s*\[\s*2\s*,\s*"([^"]*)"')
async def handler(ws):
    async for msg in ws:
        m = ENV.match(msg)
        if m:
            await ws.send('[3,"%s",{}]' % m.group(1))
async def main():
    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"], compression=None,
                     max_queue=None, ping_interval=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(float(sys.argv[1]))
asyncio.run(main())
"""


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def open_chargers(base: str, n: int, prefix: str) -> list[ClientConnection]:
    sem = asyncio.Semaphore(100)  # keep the handshake burst within the listen backlog

    async def one(i: int) -> ClientConnection:
        async with sem:
            return await connect(
                f"{base}/{prefix}{i:05d}",
                subprotocols=[Subprotocol("ocpp1.6")],
                compression=None,
                open_timeout=60,
                ping_interval=None,
                max_queue=None,
            )

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def drive(conns: list[ClientConnection], duration: float) -> tuple[list[float], int]:
    """Each charger does round trips back to back until `duration` is over."""
    latencies: list[float] = []
    end = time.perf_counter() + duration

    async def loop(ws: ClientConnection, k: int) -> None:
        i = 0
        while time.perf_counter() < end:
            i += 1
            frame = f'[2,"{k}-{i}","MeterValues",{METER_PAYLOAD}]'
            t0 = time.perf_counter()
            await ws.send(frame)
            await ws.recv()
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(loop(ws, k) for k, ws in enumerate(conns)))
    return latencies, len(latencies)


async def phase(base: str, n: int, duration: float, prefix: str) -> dict[str, float]:
    conns = await open_chargers(base, n, prefix)
    try:
        await drive(conns, min(1.0, duration / 5))  # warm-up
        lat, count = await drive(conns, duration)
    finally:
        await asyncio.gather(*(ws.close() for ws in conns))
    return {
        "p50_ms": percentile(lat, 0.50) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        # a round trip is two frames relayed: the call up, the result down
        "frames_per_s": 2 * count / duration,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1,100,1000")
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    budget = (len(sizes) * 2 * (args.duration * 1.2 + 30)) + 60
    tmp = Path(tempfile.mkdtemp(prefix="harmone-bench-"))
    db = f"sqlite:///{tmp / 'bench.db'}"
    cpms = subprocess.Popen(
        [sys.executable, "-c", CPMS_CODE, str(budget)], stdout=subprocess.PIPE, text=True
    )
    harmone: subprocess.Popen[str] | None = None
    try:
        assert cpms.stdout is not None
        cpms_url = f"ws://127.0.0.1:{int(cpms.stdout.readline())}"
        pw = tmp / "pw"
        pw.write_text("bench-password\n")
        run = [sys.executable, "-m", "harmone"]
        subprocess.run(
            [
                *run,
                "init",
                "--db",
                db,
                "--admin-email",
                "bench@example.com",
                "--admin-password-file",
                str(pw),
            ],
            check=True,
            capture_output=True,
        )
        token = subprocess.run(
            [*run, "token", "create", "--db", db, "--email", "bench@example.com"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        harmone = subprocess.Popen(
            [
                *run,
                "--log-level",
                "WARNING",
                "serve",
                "--db",
                db,
                "--port",
                "0",
                "--flood-rate",
                "1000000",
                "--flood-burst",
                "1000000",
            ],
            text=True,
        )
        return asyncio.run(measure(harmone.pid, token, cpms_url, sizes, args.duration))
    finally:
        for p in (harmone, cpms):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()


async def measure(pid: int, token: str, cpms_url: str, sizes: list[int], duration: float) -> int:
    port = await find_listen_port(pid)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}
    ) as api:
        r = await api.post(
            "/api/v1/sites", json={"name": "bench", "type": "cloud", "cpms_url": cpms_url}
        )
        r.raise_for_status()
        relay_base = r.json()["ocpp_url"]
    proc = psutil.Process(pid)
    print(
        f"HARMON-E relay benchmark: {duration:g} s per phase, "
        "Call->CallResult round trips of MeterValues frames"
    )
    print(
        f"{'chargers':>8} {'path':>7} {'p50 ms':>8} {'p99 ms':>8} {'frames/s':>10} "
        f"{'p50 x':>6} {'p99 x':>6} {'fps x':>6}"
    )
    mem: dict[int, float] = {}
    # One baseline for all sizes: the server with its site and no charger connected yet.
    # (Re-measuring after a phase would count heap kept from earlier chargers as free.)
    rss0 = proc.memory_info().rss
    for n in sizes:
        direct = await phase(cpms_url, n, duration, f"D{n}-")
        relay_task = asyncio.create_task(phase(relay_base, n, duration, f"R{n}-"))
        # sample memory while all n chargers are connected
        await asyncio.sleep(min(1.0, duration / 5) + duration / 2)
        rss1 = proc.memory_info().rss
        relayed = await relay_task
        mem[n] = (rss1 - rss0) / n
        for label, res in (("direct", direct), ("relay", relayed)):
            ratio = (
                ""
                if label == "direct"
                else (
                    f"{relayed['p50_ms'] / direct['p50_ms']:>6.2f} "
                    f"{relayed['p99_ms'] / direct['p99_ms']:>6.2f} "
                    f"{relayed['frames_per_s'] / direct['frames_per_s']:>6.2f}"
                )
            )
            print(
                f"{n:>8} {label:>7} {res['p50_ms']:>8.2f} {res['p99_ms']:>8.2f} "
                f"{res['frames_per_s']:>10.0f} {ratio}"
            )
    print(
        "resident memory of HARMON-E per connected charger (KiB):",
        ", ".join(f"{n}: {m / 1024:.1f}" for n, m in mem.items()),
    )
    print("ratios: latency > 1 is slower, frames/s < 1 is fewer than the direct baseline")
    return 0


async def find_listen_port(pid: int, timeout: float = 30.0) -> int:
    """The TCP port the `harmone serve` process listens on (it was started with --port 0)."""
    end = time.monotonic() + timeout
    proc = psutil.Process(pid)
    while time.monotonic() < end:
        ports = [
            c.laddr.port for c in proc.net_connections("tcp") if c.status == psutil.CONN_LISTEN
        ]
        if ports:
            async with httpx.AsyncClient() as client:
                try:
                    r = await client.get(f"http://127.0.0.1:{ports[0]}/healthz")
                    if r.json().get("status") == "ok":
                        return ports[0]
                except httpx.HTTPError:
                    pass
        await asyncio.sleep(0.1)
    raise RuntimeError("harmone serve did not start listening")


if __name__ == "__main__":
    raise SystemExit(main())
