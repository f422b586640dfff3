"""The reconnect storm (issue 5): thousands of chargers at once, a CPMS blip, a HARMON-E restart.

Four processes on 127.0.0.1, all from `bench/storm.py`: HARMON-E (`running_server` on a SQLite
file), a CPMS that counts the handshakes in progress, and 2,000 raw WebSocket chargers that
reconnect by themselves; this test drives them and watches HARMON-E through its REST API only.

1. **Storm.** 2,000 chargers HARMON-E knows (they are in its database, as after a restart)
   connect within a second to a freshly started HARMON-E: every one is accepted, every CPMS
   link is up (`connected` and `upstream_connected` in `GET /api/v1/sites/{uid}/chargers`) and
   every charger's Heartbeat is answered by the CPMS.
2. **CPMS blip.** The CPMS is killed (SIGKILL) and started again on the same port: all 2,000
   CPMS links come back by themselves, the chargers staying connected throughout (the load
   generator counts, per charger, every closed connection and every reconnection: none).
3. **Restart.** HARMON-E is killed (SIGKILL) and started again on the same database and port:
   the 2,000 chargers reconnect by themselves within a second of noticing, and everything is up
   again as in 1.

Throughout, `GET /healthz` and `GET /api/v1/sites/{uid}/chargers` are polled: the worst latency
of each is printed and only required to be under `API_PATIENCE`. HARMON-E's peak resident
memory (the kernel's high-water mark, VmHWM) and the CPMS's peak of concurrent handshakes are
printed too; the latter is asserted against `RelayConfig.max_concurrent_dials` when that limit
exists. No other timing or memory is asserted.

Cost: about a minute of wall time and both cores of the 2-core reference machine, and
~6,000 sockets (the file descriptor limit is raised towards 16,384 in every process). It runs
in the normal suite; `-m "not slow"` leaves it out. `HARMONE_STORM_CHARGERS=200` runs a
smaller storm for a quick look.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import resource
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import insert

from harmone.config import RelayConfig
from harmone.services.accounts import Accounts
from harmone.store import Store
from harmone.store.models import ChargerRow

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STORM = ROOT / "bench" / "storm.py"
CHARGERS = int(os.environ.get("HARMONE_STORM_CHARGERS", "2000"))
#: Every process stops by itself after this long, whatever happens to the test.
LIFETIME = 240.0
#: How long one API request may take during the storm before the test calls it unanswered:
#: a guard against a hung API, not a latency target (the charger list took 27 s at worst on a
#: loaded 2-core machine; the worst latency is printed).
API_PATIENCE = 60.0
#: How long each phase may take before the test fails.
PHASE_TIMEOUT = 90.0
#: Backoff towards the CPMS: short, so that the blip is over in seconds rather than a minute.
RELAY = ("backoff_initial=0.5", "backoff_max=2")


def dial_limit() -> int | None:
    """HARMON-E's bound on concurrent CPMS dials, if this version has one."""
    names = {f.name for f in dataclasses.fields(RelayConfig)}
    if "max_concurrent_dials" not in names:
        return None
    return int(RelayConfig().max_concurrent_dials)  # type: ignore[attr-defined]


def peak_rss(pid: int) -> int:
    """The process's resident-memory high-water mark in bytes (Linux VmHWM), else its RSS."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return int(psutil.Process(pid).memory_info().rss)


class Role:
    """One `bench/storm.py` process: JSON lines on stdout, its log in a file."""

    def __init__(self, name: str, log_dir: Path, *args: str, stdin: bool = False) -> None:
        self.name = name
        self.args = args
        self.log = log_dir / f"{name}.log"
        self.stdin = stdin
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 60) -> dict[str, Any]:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(STORM),
                "--lifetime",
                str(LIFETIME),
                *self.args,
                stdin=asyncio.subprocess.PIPE if self.stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        return await self.read(timeout)

    async def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self.name}: no answer within {timeout:g} s") from None
        if not line:
            raise AssertionError(f"{self.name} exited: {self.tail()}")
        result: dict[str, Any] = json.loads(line)
        return result

    async def ask(self, command: str, timeout: float = 60) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.read(timeout)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go within 20 s; reap it and its pipes."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        try:
            await asyncio.wait_for(proc.communicate(), 20)
        except TimeoutError:
            proc.kill()
            await proc.communicate()

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclasses.dataclass
class ApiWatch:
    """Worst latency of each polled endpoint while the storm goes on."""

    worst: dict[str, float] = dataclasses.field(default_factory=dict)
    answered: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    #: True while HARMON-E is down on purpose: failing to connect is then no error.
    expect_down: bool = False

    async def run(self, api: httpx.AsyncClient, paths: dict[str, str]) -> None:
        while True:
            for name, path in paths.items():
                start = time.perf_counter()
                try:
                    r = await api.get(path, timeout=API_PATIENCE)
                except httpx.HTTPError as exc:
                    if not (self.expect_down and isinstance(exc, httpx.TransportError)):
                        self.errors.append(f"{name}: {type(exc).__name__} {exc}")
                    await asyncio.sleep(0.2)
                    continue
                took = time.perf_counter() - start
                if r.status_code != 200:
                    self.errors.append(f"{name}: HTTP {r.status_code}")
                self.answered += 1
                self.worst[name] = max(self.worst.get(name, 0.0), took)
            await asyncio.sleep(0.25)


@contextlib.asynccontextmanager
async def watching(api: httpx.AsyncClient, paths: dict[str, str]) -> AsyncIterator[ApiWatch]:
    watch = ApiWatch()
    task = asyncio.create_task(watch.run(api, paths))
    try:
        yield watch
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def wait_until(what: str, check: Callable[[], Any], timeout: float = PHASE_TIMEOUT) -> float:
    """Await `check()` until it is true; the seconds it took. Fails after `timeout`."""
    start = time.perf_counter()
    while not await check():
        if time.perf_counter() - start > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.2)
    return time.perf_counter() - start


async def prepare_database(db_url: str, cpms_url: str) -> tuple[str, str]:
    """A migrated database with an admin, a site on `cpms_url` and its CHARGERS already known
    (as after a restart: chargers HARMON-E has seen before); returns (API token, site UID).

    The chargers are inserted in one statement: registering 2,000 one by one takes seconds,
    and 2,000 *new* chargers at once are a different test (see docs/reliability.md)."""
    store = await Store.open(db_url)
    try:
        await store.migrate()
        await Accounts(store).create_user(
            "storm@example.com", "correct horse battery", role="admin"
        )
        token = await Accounts(store).create_token("storm@example.com")
        site = await store.sites.create("Storm", "cloud", cpms_url=cpms_url)
        async with store.engine.begin() as conn:
            await conn.execute(
                insert(ChargerRow),
                [{"site_uid": site.uid, "id": charger_id(i)} for i in range(CHARGERS)],
            )
        return token, site.uid
    finally:
        await store.close()


def charger_id(i: int) -> str:
    return f"S{i:05d}"  # as bench/storm.py names them


async def test_reconnect_storm_cpms_blip_and_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert min(hard, 16384) >= 3 * CHARGERS + 500, f"file descriptor limit too low: {hard}"
    db_url = f"sqlite:///{tmp_path / 'storm.db'}"
    cpms = Role("cpms", tmp_path, "cpms", "--handshake-delay", "0.02")
    harmone = Role(
        "harmone", tmp_path, "harmone", "--db", db_url, *(a for r in RELAY for a in ("--relay", r))
    )
    fleet: Role | None = None
    report: dict[str, Any] = {"chargers": CHARGERS, "dial_limit": dial_limit()}
    rss_peak = 0
    try:
        cpms_port = (await cpms.start())["port"]
        token, site_uid = await prepare_database(db_url, f"ws://127.0.0.1:{cpms_port}")
        url = (await harmone.start())["url"]
        cpms_stats = f"http://127.0.0.1:{cpms_port}/stats"
        async with (
            httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=API_PATIENCE
            ) as api,
            httpx.AsyncClient(timeout=10) as plain,
        ):
            r = await api.get(f"/api/v1/sites/{site_uid}")
            assert r.status_code == 200, r.text
            site = r.json()
            chargers_path = f"/api/v1/sites/{site_uid}/chargers"
            assert len((await api.get(chargers_path)).json()) == CHARGERS

            async def counts() -> tuple[int, int]:
                rows = (await api.get(chargers_path)).json()
                return (
                    sum(c["connected"] for c in rows),
                    sum(c["connected"] and c["upstream_connected"] for c in rows),
                )

            async def all_up() -> bool:
                return await counts() == (CHARGERS, CHARGERS)

            async def all_down_upstream() -> bool:
                connected, up = await counts()
                return connected == CHARGERS and up == 0

            async def peak_dials() -> int:
                return int((await plain.get(cpms_stats + "?reset")).json()["peak"])

            async def heartbeats() -> None:
                assert fleet is not None
                answer = await fleet.ask("heartbeat")
                assert answer == {"event": "heartbeat", "cpms": CHARGERS}, answer

            async def drops() -> dict[str, dict[str, int]]:
                """Per charger: closed connections and reconnections since the last call."""
                assert fleet is not None
                answer = await fleet.ask("drops")
                assert answer["event"] == "drops", answer
                return {"closed": answer["closed"], "reconnected": answer["reconnected"]}

            async with watching(api, {"healthz": "/healthz", "chargers": chargers_path}) as watch:
                # 1. the storm
                fleet = Role(
                    "chargers",
                    tmp_path,
                    "chargers",
                    "--url",
                    site["ocpp_url"],
                    "--count",
                    str(CHARGERS),
                    "--ramp",
                    "1",
                    stdin=True,
                )
                started = time.perf_counter()
                first = await fleet.start(PHASE_TIMEOUT)
                assert first["event"] == "all_connected", first
                report["storm_all_accepted_s"] = first["seconds"]
                await wait_until("every charger and CPMS link up after the storm", all_up)
                report["storm_all_upstreams_s"] = time.perf_counter() - started
                report["storm_peak_dials"] = await peak_dials()
                status = await fleet.ask("status")
                assert status["failures"] == {}, status  # every handshake was accepted
                await heartbeats()
                # no charger was accepted and then dropped either
                assert await drops() == {"closed": {}, "reconnected": {}}
                rss_peak = max(rss_peak, peak_rss(harmone.pid))

                # 2. the CPMS blip
                cpms.kill()
                await cpms.stop()
                await wait_until("every CPMS link seen down", all_down_upstream)
                cpms = Role("cpms", tmp_path, "cpms", "--port", str(cpms_port))
                await cpms.start()
                report["blip_recovery_s"] = await wait_until("every CPMS link back", all_up)
                report["blip_peak_dials"] = await peak_dials()
                assert (await fleet.ask("status"))["failures"] == {}
                await heartbeats()
                # nobody was dropped: no charger's connection closed, none had to reconnect
                assert await drops() == {"closed": {}, "reconnected": {}}
                rss_peak = max(rss_peak, peak_rss(harmone.pid))

                # 3. HARMON-E restarts (kill -9); the chargers come back by themselves
                watch.expect_down = True
                harmone.kill()
                await harmone.stop()
                harmone = Role(
                    "harmone",
                    tmp_path,
                    "harmone",
                    "--db",
                    db_url,
                    "--port",
                    url.rsplit(":", 1)[1],
                    *(a for r in RELAY for a in ("--relay", r)),
                )
                restarted = time.perf_counter()
                await harmone.start()
                watch.expect_down = False

                async def fleet_back() -> bool:
                    assert fleet is not None
                    return bool((await fleet.ask("status"))["connected"] == CHARGERS)

                await wait_until("every charger reconnected after the restart", fleet_back)
                report["restart_all_accepted_s"] = time.perf_counter() - restarted
                await wait_until("every charger and CPMS link up after the restart", all_up)
                report["restart_all_upstreams_s"] = time.perf_counter() - restarted
                report["restart_peak_dials"] = await peak_dials()
                await heartbeats()
                # here every charger was dropped and came back: what `drops` sees when it happens
                restart = await drops()
                assert set(restart["closed"]) == {charger_id(i) for i in range(CHARGERS)}
                assert set(restart["reconnected"]) == set(restart["closed"])
                rss_peak = max(rss_peak, peak_rss(harmone.pid))
            report["api_worst_s"] = {k: round(v, 3) for k, v in watch.worst.items()}
            report["api_answers"] = watch.answered
            report["peak_rss_mib"] = round(rss_peak / 2**20, 1)
    except BaseException:
        for role in (harmone, cpms, fleet):
            if role is not None:
                print(f"--- {role.name} log ---\n{role.tail()}")
        raise
    finally:
        for role in (fleet, harmone, cpms):
            if role is not None:
                await role.stop()
    shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in report.items()}
    with capsys.disabled():
        print("\nreconnect storm:", json.dumps(shown))
    assert not watch.errors, watch.errors[:5]
    assert set(watch.worst) == {"healthz", "chargers"}  # both answered during the storm
    limit = report["dial_limit"]
    if limit is not None:
        for phase in ("storm", "blip", "restart"):
            assert report[f"{phase}_peak_dials"] <= limit, report
    assert 0 < rss_peak < 2**31  # sanity only: under 2 GiB
