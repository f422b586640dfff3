"""`python bench/storm.py measure`: the reconnect-storm figures of issue 11.

Each storm runs in fresh processes of `bench/storm.py` (a CPMS, HARMON-E on uvloop, one or
more charger fleets) on 127.0.0.1 and prints one JSON line; a table closes the run. Nothing
here is asserted: tests/test_storm.py checks the behaviour, this measures it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from harmone.store import Store
from harmone.store.models import ChargerRow

#: Every process stops by itself after this long.
LIFETIME = 600.0
#: One fleet process opens at most this many chargers (a Python load generator is slower
#: than the relay it loads; several share the work).
PER_FLEET = 2500


class Proc:
    """One `bench/storm.py` role: JSON lines on stdout."""

    def __init__(self, script: Path, log: Path, *args: str) -> None:
        self.script, self.log, self.args = script, log, args
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 120) -> dict[str, Any]:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(self.script),
                "--lifetime",
                str(LIFETIME),
                *self.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        return await self.read(timeout)

    async def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"{self.args[0]} exited; see {self.log}")
        result: dict[str, Any] = json.loads(line)
        return result

    async def ask(self, command: str, timeout: float = 300) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.read(timeout)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        try:
            await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
            await proc.communicate()


async def prepare(db_url: str, cpms_url: str, known: int) -> tuple[str, str]:
    store = await Store.open(db_url)
    try:
        await store.migrate()
        await store.create_user("storm@example.com", "correct horse battery", role="admin")
        token = await store.create_token("storm@example.com")
        site = await store.create_site("Storm", "cloud", None, cpms_url)
        if known:
            async with store.engine.begin() as conn:
                await conn.execute(
                    insert(ChargerRow),
                    [{"site_uid": site.uid, "id": f"S{i:05d}"} for i in range(known)],
                )
        return token, site.uid
    finally:
        await store.close()


async def poll_api(api: httpx.AsyncClient, path: str, samples: dict[str, list[float]]) -> None:
    """Poll the charger list and /healthz back to back; latencies in `samples`."""
    while True:
        for name, url in (("chargers", path), ("healthz", "/healthz")):
            start = time.perf_counter()
            try:
                await api.get(url, timeout=60)
            except httpx.HTTPError:
                samples.setdefault(f"{name} errors", []).append(1.0)
                continue
            samples.setdefault(name, []).append(time.perf_counter() - start)
        await asyncio.sleep(0.05)


async def one_storm(
    script: Path, name: str, count: int, known: bool, soak: float
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"storm-{name}-"))
    db_url = f"sqlite:///{tmp / 'storm.db'}"
    cpms = Proc(script, tmp / "cpms.log", "cpms", "--handshake-delay", "0.02")
    harmone = Proc(script, tmp / "harmone.log", "harmone", "--db", db_url, "--uvloop")
    fleets: list[Proc] = []
    result: dict[str, Any] = {"storm": name, "chargers": count}
    try:
        cpms_port = (await cpms.start())["port"]
        token, uid = await prepare(db_url, f"ws://127.0.0.1:{cpms_port}", count if known else 0)
        url = (await harmone.start())["url"]
        samples: dict[str, list[float]] = {}
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}
        ) as api:
            ocpp_url = (await api.get(f"/api/v1/sites/{uid}")).json()["ocpp_url"]
            path = f"/api/v1/sites/{uid}/chargers"
            poller = asyncio.create_task(poll_api(api, path, samples))
            started = time.perf_counter()
            per = -(-count // max(1, -(-count // PER_FLEET)))
            for k in range(0, count, per):
                n = min(per, count - k)
                fleet = Proc(
                    script,
                    tmp / f"fleet{k}.log",
                    "chargers",
                    "--url",
                    ocpp_url,
                    "--count",
                    str(n),
                    "--prefix",
                    "S",
                    "--offset",
                    str(k),
                    "--ramp",
                    "1",
                )
                fleets.append(fleet)
            firsts = await asyncio.gather(*(f.start(300) for f in fleets))
            result["all_accepted_s"] = round(time.perf_counter() - started, 2)
            result["fleet_seconds"] = [f.get("seconds") for f in firsts]
            while True:
                rows = (await api.get(path, timeout=120)).json()
                if sum(c["connected"] and c["upstream_connected"] for c in rows) == count:
                    break
                await asyncio.sleep(0.2)
            result["all_upstreams_s"] = round(time.perf_counter() - started, 2)
            statuses = await asyncio.gather(*(f.ask("status") for f in fleets))
            result["handshake_failures"] = sum(sum(s["failures"].values()) for s in statuses)
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            for key in ("chargers", "healthz"):
                values = sorted(samples.get(key, [0.0]))
                result[f"api_{key}_ms"] = {
                    "p50": round(statistics.median(values) * 1000, 1),
                    "p99": round(values[min(len(values) - 1, int(0.99 * len(values)))] * 1000, 1),
                    "max": round(values[-1] * 1000, 1),
                    "n": len(values),
                }
            result["api_errors"] = len(samples.get("chargers errors", [])) + len(
                samples.get("healthz errors", [])
            )
            if soak:
                outcomes = await asyncio.gather(
                    *(f.ask(f"soak 10 {soak}", soak + 60) for f in fleets)
                )
                total: dict[str, int] = {}
                for o in outcomes:
                    for k2, v in o.items():
                        if k2 != "event":
                            total[k2] = total.get(k2, 0) + int(v)
                result["soak"] = {"seconds": soak, "every_s": 10, **total}
    finally:
        for proc in (*fleets, harmone, cpms):
            await proc.stop()
    print(json.dumps(result), flush=True)
    return result


async def measure_all(script: Path, count: int, big: int, soak: float, only: str) -> None:
    which = set(only.split(","))
    print(f"reconnect storms; load average {os.getloadavg()[0]:.2f} (2-core machine)", flush=True)
    results = []
    if "known" in which:
        results.append(await one_storm(script, "known", count, True, 0))
    if "first" in which:
        results.append(await one_storm(script, "first-time", count, False, 0))
    if "big" in which:
        results.append(await one_storm(script, "known-big", big, True, soak))
    print()
    print(
        f"{'storm':<11} {'chargers':>8} {'accepted s':>10} {'links up s':>10} "
        f"{'API p99 ms':>10} {'API max ms':>10}"
    )
    for r in results:
        worst99 = max(r["api_chargers_ms"]["p99"], r["api_healthz_ms"]["p99"])
        worst = max(r["api_chargers_ms"]["max"], r["api_healthz_ms"]["max"])
        print(
            f"{r['storm']:<11} {r['chargers']:>8} {r['all_accepted_s']:>10} "
            f"{r['all_upstreams_s']:>10} {worst99:>10} {worst:>10}"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
