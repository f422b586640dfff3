"""Relay benchmark: the same charger load sent straight to a CSMS, through nginx, and through
HARMON-E, in one run.

    python bench/relay_bench.py [--chargers 1000] [--loop-chargers 50] [--duration 10]
                                [--targets direct,nginx,harmone] [--prototypes]

Processes, each on its own (all on 127.0.0.1): an echo CSMS (answers every CALL with
`[3, id, {}]`), each relay under test, and this process as the load generator. CSMS and load
generator use picows on uvloop so that they are not what limits the measurement.

Per target, two phases:

1. `--chargers` chargers each send a Heartbeat once a second for `--duration` seconds: p50 and
   p99 round-trip latency (the relay's "added" latency is its figure minus the direct one),
   then the relay's resident memory per connected charger (RSS with the chargers connected
   minus RSS before they connected, divided by their number; HARMON-E's message inspector is
   on and full of their frames).
2. `--loop-chargers` chargers in a closed loop (each sends its next MeterValues as soon as the
   previous one is answered) for `--duration` seconds: calls per second.

Targets: `direct` (no relay), `nginx` (Debian's nginx-light, installed with apt-get when
missing, as root; one worker process), `harmone` (`harmone serve`, flood limits lifted, on
SQLite), and with `--prototypes` two minimal relays that parse nothing — one on picows, one on
`websockets`' asyncio server — which show what each WebSocket implementation costs by itself.
Every process stops by itself within the run's time budget.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

METER = (
    '{"connectorId":1,"transactionId":42,"meterValue":[{"timestamp":"2026-11-24T10:00:00Z",'
    '"sampledValue":[{"value":"1234.5","measurand":"Energy.Active.Import.Register",'
    '"unit":"Wh"}]}]}'
)
_ID = re.compile(rb'\[\s*2\s*,\s*"([^"]*)"')


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


# -- the echo CSMS (its own process) -----------------------------------------------------------


async def run_csms(lifetime: float) -> None:
    from picows import WSListener, WSMsgType, WSUpgradeResponse, ws_create_server
    from picows import WSUpgradeResponseWithListener as WithListener

    class Echo(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                m = _ID.match(frame.get_payload_as_bytes())
                if m:
                    transport.send(WSMsgType.TEXT, b'[3,"' + m.group(1) + b'",{}]')
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    def factory(request: Any) -> Any:
        response = WSUpgradeResponse.create_101_response()
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        if "ocpp1.6" in offered:
            response.headers["Sec-WebSocket-Protocol"] = "ocpp1.6"
        return WithListener(response, Echo())

    server = await ws_create_server(factory, "127.0.0.1", 0, backlog=4096)
    emit(port=server.sockets[0].getsockname()[1])
    await asyncio.sleep(lifetime)


# -- minimal relays (prototypes, their own processes) -------------------------------------------


async def run_picows_proto(upstream: str, lifetime: float) -> None:
    """Frames copied both ways, nothing parsed: what picows costs."""
    from picows import WSListener, WSMsgType, WSUpgradeResponse, ws_connect, ws_create_server
    from picows import WSUpgradeResponseWithListener as WithListener

    class Side(WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.peer: Side | None = None
            self.transport: Any = None
            self.early: list[bytes] = []

        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                data = frame.get_payload_as_bytes()
                if self.peer is not None and self.peer.transport is not None:
                    self.peer.transport.send(WSMsgType.TEXT, data)
                else:
                    self.early.append(data)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            if self.peer is not None and self.peer.transport is not None:
                self.peer.transport.disconnect()

    def factory(request: Any) -> Any:
        charger = Side()
        path = request.path.decode()

        async def dial() -> None:
            cpms = Side()
            await ws_connect(lambda: cpms, upstream + path)
            cpms.peer, charger.peer = charger, cpms
            for data in charger.early:
                cpms.transport.send(WSMsgType.TEXT, data)

        asyncio.get_running_loop().create_task(dial())
        response = WSUpgradeResponse.create_101_response()
        response.headers["Sec-WebSocket-Protocol"] = "ocpp1.6"
        return WithListener(response, charger)

    server = await ws_create_server(factory, "127.0.0.1", 0, backlog=4096)
    emit(port=server.sockets[0].getsockname()[1])
    await asyncio.sleep(lifetime)


async def run_websockets_proto(upstream: str, lifetime: float) -> None:
    """The same with `websockets`' asyncio server and client (CPMS dialled before answering,
    in process_request, as HARMON-E does)."""
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    pending: dict[int, Any] = {}

    async def process_request(conn: Any, request: Any) -> None:
        pending[id(conn)] = await connect(
            upstream + request.path, subprotocols=["ocpp1.6"], compression=None
        )

    async def handler(conn: Any) -> None:
        cpms = pending.pop(id(conn))

        async def pump(src: Any, dst: Any) -> None:
            with _suppress(ConnectionClosed):
                async for message in src:
                    await dst.send(message)

        await asyncio.gather(pump(conn, cpms), pump(cpms, conn))
        await cpms.close()

    async with serve(
        handler,
        "127.0.0.1",
        0,
        subprotocols=["ocpp1.6"],
        process_request=process_request,
        compression=None,
        backlog=4096,
    ) as server:
        emit(port=server.sockets[0].getsockname()[1])
        await asyncio.sleep(lifetime)


class _suppress:  # contextlib.suppress without the import in the child's hot path
    def __init__(self, *exc: type[BaseException]) -> None:
        self.exc = exc

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, *_: Any) -> bool:
        return kind is not None and issubclass(kind, self.exc)


# -- the load generator ---------------------------------------------------------------------------


@dataclass
class Charger:
    transport: Any = None
    sent_at: float = 0.0
    seq: int = 0
    latencies: list[float] = field(default_factory=list)
    on_answer: Callable[[Charger], None] | None = None


async def open_chargers(url: str, n: int, prefix: str) -> list[Charger]:
    from picows import WSListener, WSMsgType, ws_connect

    chargers = [Charger() for _ in range(n)]

    class Client(WSListener):  # type: ignore[misc]
        def __init__(self, charger: Charger) -> None:
            self.charger = charger

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                c = self.charger
                c.latencies.append(time.perf_counter() - c.sent_at)
                if c.on_answer is not None:
                    c.on_answer(c)

    sem = asyncio.Semaphore(200)

    async def one(i: int) -> None:
        async with sem:
            transport, _ = await ws_connect(
                lambda: Client(chargers[i]),
                f"{url}/{prefix}{i:05d}",
                extra_headers={"Sec-WebSocket-Protocol": "ocpp1.6"},
                websocket_handshake_timeout=60,
                use_aiofastnet=False,
            )
            chargers[i].transport = transport

    await asyncio.gather(*(one(i) for i in range(n)))
    return chargers


def send(c: Charger, action: str, payload: str) -> None:
    c.seq += 1
    c.sent_at = time.perf_counter()
    c.transport.send(_TEXT, f'[2,"{c.seq}","{action}",{payload}]'.encode())


async def heartbeat_phase(chargers: list[Charger], duration: float) -> list[float]:
    """Each charger sends a Heartbeat every second (phases spread over the second)."""

    async def beat(c: Charger) -> None:
        await asyncio.sleep(random.random())
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            send(c, "Heartbeat", "{}")
            await asyncio.sleep(1.0)

    await asyncio.gather(*(beat(c) for c in chargers))
    await asyncio.sleep(0.5)  # the last answers
    return [x for c in chargers for x in c.latencies]


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        proc = psutil.Process(pid)
        for p in (proc, *proc.children(recursive=True)):
            t = p.cpu_times()
            total += t.user + t.system
    return total


async def loop_phase(
    chargers: list[Charger], duration: float, pids: list[int] | None = None
) -> tuple[float, float | None]:
    """Closed loop: the next call as soon as the last is answered; calls per second, and
    the relay's CPU time per call in microseconds (None for the direct path)."""
    running = True

    def again(c: Charger) -> None:
        if running:
            send(c, "MeterValues", METER)

    for c in chargers:
        c.on_answer = again
        c.latencies.clear()
    for c in chargers:
        send(c, "MeterValues", METER)
    await asyncio.sleep(min(1.0, duration / 5))  # warm-up
    start = sum(len(c.latencies) for c in chargers)
    cpu0 = cpu_seconds(pids) if pids else 0.0
    t0 = time.perf_counter()
    await asyncio.sleep(duration)
    done = sum(len(c.latencies) for c in chargers) - start
    elapsed = time.perf_counter() - t0
    cpu = (cpu_seconds(pids) - cpu0) / max(1, done) * 1e6 if pids else None
    running = False
    await asyncio.sleep(0.2)
    return done / elapsed, cpu


def close_all(chargers: list[Charger]) -> None:
    for c in chargers:
        if c.transport is not None:
            c.transport.send_close()
            c.transport.disconnect()


def _text_type() -> Any:
    from picows import WSMsgType

    return WSMsgType.TEXT


_TEXT = _text_type()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


def rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        proc = psutil.Process(pid)
        total += proc.memory_info().rss
        total += sum(child.memory_info().rss for child in proc.children(recursive=True))
    return total


@dataclass
class Result:
    p50: float
    p99: float
    rss_per_charger: float | None
    calls_per_s: float
    #: the relay's own CPU time per closed-loop call (both frames), in microseconds
    cpu_us: float | None


async def measure(url: str, pids: list[int], args: argparse.Namespace, tag: str) -> Result:
    before = rss(pids) if pids else 0
    chargers = await open_chargers(url, args.chargers, f"{tag}H")
    lat = await heartbeat_phase(chargers, args.duration)
    per = (rss(pids) - before) / len(chargers) if pids else None
    close_all(chargers)
    await asyncio.sleep(1.0)
    loopers = await open_chargers(url, args.loop_chargers, f"{tag}L")
    rate, cpu = await loop_phase(loopers, args.duration, pids)
    close_all(loopers)
    await asyncio.sleep(1.0)
    return Result(pct(lat, 0.5), pct(lat, 0.99), per, rate, cpu)


# -- targets --------------------------------------------------------------------------------------


def spawn(args: list[str], **kw: Any) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, **kw)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{args[:3]} did not start")
    return proc, json.loads(line)


def ensure_nginx() -> str | None:
    found = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx")
    if found:
        return str(found)
    if os.geteuid() != 0:
        print("nginx is missing and this is not root: the nginx target is skipped")
        return None
    print("installing Debian's nginx-light for the comparison (apt-get)...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "nginx-light"], check=True, env=env, capture_output=True
    )
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    return str(found) if Path(found).exists() else None


NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {tmp}/nginx.pid;
error_log stderr error;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
            proxy_buffering off;
        }}
    }}
}}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nginx(binary: str, tmp: Path, csms_port: int) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    conf = tmp / "nginx.conf"
    import resource

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 65536 if nofile == resource.RLIM_INFINITY else min(nofile, 65536)
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, upstream=csms_port, nofile=nofile))
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(tmp)], text=True)
    wait_port(port)
    return proc, f"ws://127.0.0.1:{port}"


def wait_port(port: int, timeout: float = 30.0) -> None:
    import socket

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_harmone(tmp: Path, csms_url: str, budget: float) -> tuple[subprocess.Popen[str], str]:
    import httpx

    db = f"sqlite:///{tmp / 'bench.db'}"
    pw = tmp / "pw"
    pw.write_text("bench-password\n")
    run = [sys.executable, "-m", "harmone"]
    init = [*run, "init", "--db", db, "--admin-email", "b@example.com"]
    subprocess.run([*init, "--admin-password-file", str(pw)], check=True, capture_output=True)
    token = subprocess.run(
        [*run, "token", "create", "--db", db, "--email", "b@example.com"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [
            *run,
            "--log-level",
            "WARNING",
            "serve",
            "--db",
            db,
            "--port",
            str(port),
            "--flood-rate",
            "1000000",
            "--flood-burst",
            "1000000",
        ],
        text=True,
    )
    end = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").json().get("status") == "ok":
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > end or proc.poll() is not None:
            raise RuntimeError("harmone serve did not start")
        time.sleep(0.1)
    r = httpx.post(
        f"http://127.0.0.1:{port}/api/v1/sites",
        headers={"Authorization": f"Bearer {token}"},
        json={"name": "bench", "type": "cloud", "cpms_url": csms_url},
    )
    r.raise_for_status()
    return proc, str(r.json()["ocpp_url"])


def stop(proc: subprocess.Popen[str] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chargers", type=int, default=1000)
    parser.add_argument("--loop-chargers", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--targets", default="direct,nginx,harmone")
    parser.add_argument("--prototypes", action="store_true")
    parser.add_argument("--role", choices=["csms", "proto-picows", "proto-websockets"])
    parser.add_argument("--upstream", default="")
    parser.add_argument("--lifetime", type=float, default=600.0)
    args = parser.parse_args()
    import uvloop

    if args.role == "csms":
        uvloop.run(run_csms(args.lifetime))
        return 0
    if args.role == "proto-picows":
        uvloop.run(run_picows_proto(args.upstream, args.lifetime))
        return 0
    if args.role == "proto-websockets":
        uvloop.run(run_websockets_proto(args.upstream, args.lifetime))
        return 0
    targets = [t for t in args.targets.split(",") if t]
    if args.prototypes:
        targets += ["picows-proto", "websockets-proto"]
    budget = len(targets) * (2 * args.duration + 90) + 120
    me = [sys.executable, __file__, "--lifetime", str(budget)]
    tmp = Path(tempfile.mkdtemp(prefix="harmone-bench-"))
    procs: list[subprocess.Popen[str]] = []
    try:
        csms, info = spawn([*me, "--role", "csms"])
        procs.append(csms)
        csms_url = f"ws://127.0.0.1:{info['port']}"
        results: dict[str, Result] = {}
        print(
            f"relay benchmark: {args.chargers} chargers x 1 Heartbeat/s, then "
            f"{args.loop_chargers} in a closed loop; {args.duration:g} s each; "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        for target in targets:
            proc: subprocess.Popen[str] | None = None
            if target == "direct":
                url, pids = csms_url, []
            elif target == "nginx":
                binary = ensure_nginx()
                if binary is None:
                    continue
                proc, url = start_nginx(binary, tmp, info["port"])
                pids = [proc.pid]
            elif target == "harmone":
                proc, url = start_harmone(tmp, csms_url, budget)
                pids = [proc.pid]
            elif target in ("picows-proto", "websockets-proto"):
                role = "proto-" + target.split("-")[0]
                proc, pinfo = spawn([*me, "--role", role, "--upstream", csms_url])
                url, pids = f"ws://127.0.0.1:{pinfo['port']}", [proc.pid]
            else:
                raise SystemExit(f"unknown target {target}")
            procs.append(proc) if proc is not None else None
            try:
                results[target] = uvloop.run(measure(url, pids, args, target[:2].upper()))
            finally:
                stop(proc)
            r = results[target]
            print(f"  {target}: done ({r.calls_per_s:,.0f} calls/s)", flush=True)
        report(results)
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(results: dict[str, Result]) -> None:
    direct = results.get("direct")
    nginx = results.get("nginx")
    print()
    print(
        f"{'relay':<18} {'calls/s':>9} {'x direct':>8} {'x nginx':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'+p50':>6} {'+p99':>6} {'kB/charger':>10} "
        f"{'CPU us/call':>11}"
    )
    for name, r in results.items():
        xd = f"{r.calls_per_s / direct.calls_per_s:.2f}" if direct else "-"
        xn = f"{r.calls_per_s / nginx.calls_per_s:.2f}" if nginx else "-"
        add50 = f"{r.p50 - direct.p50:+.2f}" if direct and name != "direct" else "-"
        add99 = f"{r.p99 - direct.p99:+.2f}" if direct and name != "direct" else "-"
        kb = f"{r.rss_per_charger / 1000:.1f}" if r.rss_per_charger is not None else "-"
        cpu = f"{r.cpu_us:.0f}" if r.cpu_us is not None else "-"
        print(
            f"{name:<18} {r.calls_per_s:>9,.0f} {xd:>8} {xn:>8} {r.p50:>7.2f} {r.p99:>7.2f} "
            f"{add50:>6} {add99:>6} {kb:>10} {cpu:>11}"
        )
    h, n = results.get("harmone"), nginx
    if h and n and direct:
        print()
        print("targets (issue 11):")
        ok = h.calls_per_s >= 0.8 * n.calls_per_s
        print(f"  throughput >= 0.8 x nginx: {h.calls_per_s / n.calls_per_s:.2f} {_mark(ok)}")
        if h.rss_per_charger and n.rss_per_charger:
            ratio = h.rss_per_charger / n.rss_per_charger
            print(f"  RSS/charger <= 1.5 x nginx: {ratio:.2f} {_mark(ratio <= 1.5)}")
        extra = (h.p99 - direct.p99) - (n.p99 - direct.p99)
        print(f"  added p99 <= nginx's + 1 ms: {extra:+.2f} ms {_mark(extra <= 1.0)}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (2-core machine; shared)")


def _mark(ok: bool) -> str:
    return "met" if ok else "NOT met"


if __name__ == "__main__":
    raise SystemExit(main())
