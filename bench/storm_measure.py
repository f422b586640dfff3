"""`python bench/storm.py measure`: the reconnect-storm figures of issue 11.

Each storm runs in fresh processes of `bench/storm.py` (a CPMS, HARMON-E on uvloop, one or
more charger fleets) on 127.0.0.1 and prints one JSON line; a table closes the run. Nothing
here is asserted: tests/relay/test_storm.py checks the behaviour, this measures it.
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

from harmone.services.accounts import Accounts
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


def summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "p50": round(statistics.median(values) * 1000, 1),
        "p99": round(values[min(len(values) - 1, int(0.99 * len(values)))] * 1000, 1),
        "max": round(values[-1] * 1000, 1),
        "n": len(values),
    }


def cpu_of(proc: Proc) -> float:
    """CPU seconds (user + system) a role's process has used so far."""
    import psutil

    assert proc.proc is not None
    t = psutil.Process(proc.proc.pid).cpu_times()
    return float(t.user + t.system)


async def prepare(db_url: str, cpms_url: str, known: int) -> tuple[str, str]:
    store = await Store.open(db_url)
    try:
        await store.migrate()
        accounts = Accounts(store)
        await accounts.create_user("storm@example.com", "correct horse battery", role="admin")
        token = await accounts.create_token("storm@example.com")
        site = await store.sites.create("Storm", "cloud", cpms_url=cpms_url)
        if known:
            async with store.engine.begin() as conn:
                await conn.execute(
                    insert(ChargerRow),
                    [{"site_uid": site.uid, "id": f"S{i:05d}"} for i in range(known)],
                )
        return token, site.uid
    finally:
        await store.close()


async def poll_api(
    api: httpx.AsyncClient, paths: dict[str, tuple[str, float]], samples: dict[str, list[float]]
) -> None:
    """Poll each path every so often (name -> (path, interval)); latencies in `samples`."""

    async def poll(name: str, path: str, every: float) -> None:
        while True:
            start = time.perf_counter()
            try:
                r = await api.get(path, timeout=60)
                # 404: the polled charger has not connected yet (a first-time storm)
                if r.status_code not in (200, 404):
                    samples.setdefault("errors", []).append(1.0)
            except httpx.HTTPError:
                samples.setdefault("errors", []).append(1.0)
            else:
                samples.setdefault(name, []).append(time.perf_counter() - start)
            await asyncio.sleep(every)

    await asyncio.gather(*(poll(name, p, every) for name, (p, every) in paths.items()))


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
            # What a person and the console do meanwhile: health, the site, one charger, a
            # few times a second; the whole list of every charger (thousands, serialised)
            # once a second, reported on its own.
            paths = {
                "healthz": ("/healthz", 0.1),
                "site": (f"/api/v1/sites/{uid}", 0.1),
                "charger": (f"{path}/S00000", 0.1),
                "list": (path, 1.0),
            }
            poller = asyncio.create_task(poll_api(api, paths, samples))
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
            cpu0 = {"harmone": cpu_of(harmone), "cpms": cpu_of(cpms)}
            firsts = await asyncio.gather(*(f.start(300) for f in fleets))
            result["all_accepted_s"] = round(time.perf_counter() - started, 2)
            # CPU seconds each process spent on the storm: who was the bottleneck
            result["cpu_s"] = {
                "harmone": round(cpu_of(harmone) - cpu0["harmone"], 2),
                "cpms": round(cpu_of(cpms) - cpu0["cpms"], 2),
                "chargers": round(sum(cpu_of(f) for f in fleets), 2),
            }
            result["fleet_seconds"] = [f.get("seconds") for f in firsts]
            while True:
                rows = (await api.get(path, timeout=120)).json()
                if sum(c["connected"] and c["upstream_connected"] for c in rows) == count:
                    break
                await asyncio.sleep(0.2)
            result["all_upstreams_s"] = round(time.perf_counter() - started, 2)
            statuses = await asyncio.gather(*(f.ask("status") for f in fleets))
            failures: dict[str, int] = {}
            for status in statuses:
                for kind, n in status["failures"].items():
                    failures[kind] = failures.get(kind, 0) + n
            # handshakes the chargers had to retry, by what went wrong
            result["handshake_failures"] = failures
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            for key in ("healthz", "site", "charger", "list"):
                result[f"api_{key}_ms"] = summary(samples.get(key, [0.0]))
            result["api_ms"] = summary(
                [x for k in ("healthz", "site", "charger") for x in samples.get(k, [])] or [0.0]
            )
            result["api_errors"] = len(samples.get("errors", []))
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
        f"{'API p99 ms':>10} {'API max ms':>10} {'list p50 ms':>11} {'list max ms':>11}"
    )
    for r in results:
        api, listed = r["api_ms"], r["api_list_ms"]
        print(
            f"{r['storm']:<11} {r['chargers']:>8} {r['all_accepted_s']:>10} "
            f"{r['all_upstreams_s']:>10} {api['p99']:>10} {api['max']:>10} "
            f"{listed['p50']:>11} {listed['max']:>11}"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
