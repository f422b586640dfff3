"""Test support: an in-process HARMON-E, API clients for it, and a raw CPMS that records
exact frames."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import ssl
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from harmone.config import RelayConfig, ServerConfig
from harmone.services.accounts import Accounts
from harmone.services.sites import ocpp_url
from harmone.sim import SimulatedCharger
from harmone.store.records import Site
from harmone.web.serve import RunningServer, running_server


def strict_run() -> bool:
    """Must this run fail rather than skip tests whose server is missing (PostgreSQL, the
    browser)? Yes when $HARMONE_TEST_STRICT is 1; when it is unset, whenever $CI is set to
    anything (CI services set CI=true): the one rule for every such skip."""
    strict = os.environ.get("HARMONE_TEST_STRICT")
    if strict is not None:
        return strict == "1"
    return bool(os.environ.get("CI"))


#: How long a test waits for something bound to happen before calling it a failure: a guard
#: against hanging forever, never a claim about speed (that is measured under bench/).
PATIENCE = 30.0

#: The mark of a test that uses `shared_srv` (conftest): it runs in the module's event loop.
ON_SHARED_SERVER = pytest.mark.asyncio(loop_scope="module")

FAST_RELAY = RelayConfig(
    upstream_connect_timeout=1.0,
    call_timeout=5.0,
    backoff_initial=0.05,
    backoff_max=0.3,
)


@contextlib.asynccontextmanager
async def harmone_server(
    tmp_path: Path,
    relay: RelayConfig = FAST_RELAY,
    db_url: str | None = None,
    public_url: str | None = None,
    **extra: Any,
) -> AsyncIterator[RunningServer]:
    config = ServerConfig(
        db_url=db_url or f"sqlite:///{tmp_path / 'harmone.db'}",
        host="127.0.0.1",
        port=0,
        relay=relay,
        public_url=public_url,
        shutdown_grace=2.0,
        **extra,
    )
    async with running_server(config) as srv:
        yield srv


class FixedClock:
    """A `harmone.clock.Clock` whose wall time stands still at `now`, so that the timestamps a
    test checks are exact; its monotonic time is the real one (timeouts still act)."""

    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return time.monotonic()


#: Every test user's password.
PASSWORD = "correct horse battery"


async def api_client(srv: RunningServer, email: str) -> httpx.AsyncClient:
    """A REST client with a new API token of the existing user `email`."""
    token = await Accounts(srv.runtime.store).create_token(email)
    return httpx.AsyncClient(
        base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


async def client_for(
    srv: RunningServer, role: str = "admin", email: str | None = None
) -> httpx.AsyncClient:
    """A REST client of a new user with `role` (e-mail `{role}@example.com` unless given)."""
    email = email or f"{role}@example.com"
    await Accounts(srv.runtime.store).create_user(email, PASSWORD, role=role)
    return await api_client(srv, email)


def tx_limits(sim: SimulatedCharger) -> list[float]:
    """The limits of the TxProfiles a simulated charger received, in order."""
    out = []
    for action, payload in sim.received_calls:
        if action != "SetChargingProfile":
            continue
        prof = (
            payload.get("cs_charging_profiles")
            or payload.get("csChargingProfiles")
            or payload.get("charging_profile")
            or payload.get("chargingProfile")
        )
        purpose = prof.get("charging_profile_purpose") or prof.get("chargingProfilePurpose")
        if purpose == "TxProfile":
            sched = prof.get("charging_schedule") or prof.get("chargingSchedule")
            if isinstance(sched, list):
                sched = sched[0]
            periods = sched.get("charging_schedule_period") or sched.get("chargingSchedulePeriod")
            out.append(float(periods[0]["limit"]))
    return out


async def make_site(
    srv: RunningServer, cpms_url: str | None, name: str = "Depot"
) -> tuple[Site, str]:
    site = await srv.runtime.store.sites.create(name, "cloud", cpms_url=cpms_url)
    return site, ocpp_url(site, srv.runtime.cloud_base_url)


async def charger(
    url: str, subprotocols: Sequence[str] = ("ocpp1.6",), **kw: Any
) -> ClientConnection:
    return await connect(
        url, subprotocols=[Subprotocol(s) for s in subprotocols] or None, open_timeout=10, **kw
    )


class PeerFailures:
    """Exceptions inside a fake peer's handlers, raised again in the test.

    A handler runs in a task of its own: an `assert` there would only close its connection
    (and the test might still pass). `guard()` keeps the exception; `check()`, called when the
    peer stops, raises it in the test with its message.
    """

    def __init__(self) -> None:
        self.errors: list[Exception] = []

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            self.errors.append(exc)
            raise

    def check(self) -> None:
        errors, self.errors = self.errors, []
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ExceptionGroup("fake peer handlers failed", errors)


#: The id of a CALL, read without parsing the frame as JSON.
_CALL_ID = re.compile(r'\s*\[\s*2\s*,\s*"((?:[^"\\]|\\.)*)"')


@dataclass
class RawCpms:
    """The tests' CPMS: records every frame exactly and answers every CALL, with
    `answers[action]` or else `default_answer`.

    `refuse_status` refuses every handshake with that HTTP status, `accept_delay` delays each
    one; `auto_answer` False leaves CALLs unanswered (the test answers with `send`). With `tls`
    it serves wss://. `garbage_proof` reads only the id of each CALL, never the JSON (so that no
    garbage can break it), and takes frames of any size. An exception in its handlers (a failed
    `assert`) is raised again by `stop()`.
    """

    subprotocols: Sequence[str] = ("ocpp1.6", "ocpp2.0.1", "ocpp2.1")
    refuse_status: int | None = None
    auto_answer: bool = True
    accept_delay: float = 0.0
    port: int = 0
    answers: Mapping[str, Any] = field(default_factory=dict)
    default_answer: Any = field(default_factory=lambda: {"cpms": "answer"})
    tls: ssl.SSLContext | None = None
    garbage_proof: bool = False
    frames: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    headers: dict[str, Headers] = field(default_factory=dict)
    chosen: dict[str, str | None] = field(default_factory=dict)
    offered: dict[str, list[str]] = field(default_factory=dict)
    conns: dict[str, ServerConnection] = field(default_factory=dict)
    closed: dict[str, int | None] = field(default_factory=dict)
    connects: int = 0
    handshaking: int = 0
    peak_handshaking: int = 0
    failures: PeerFailures = field(default_factory=PeerFailures)
    _server: Server | None = None

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        limits: dict[str, Any] = {"max_size": None} if self.garbage_proof else {}
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            self.port,
            subprotocols=[Subprotocol(s) for s in self.subprotocols],
            process_request=self._process_request,
            ssl=self.tls,
            **limits,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.failures.check()

    async def __aenter__(self) -> RawCpms:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        with self.failures.guard():
            return await self._answer_handshake(conn, request)

    async def _answer_handshake(self, conn: ServerConnection, request: Request) -> Response | None:
        cpid = request.path.rsplit("/", 1)[-1]
        self.headers[cpid] = request.headers
        self.offered[cpid] = [
            p.strip()
            for h in request.headers.get_all("Sec-WebSocket-Protocol")
            for p in h.split(",")
        ]
        self.handshaking += 1
        self.peak_handshaking = max(self.peak_handshaking, self.handshaking)
        try:
            if self.accept_delay:
                await asyncio.sleep(self.accept_delay)
        finally:
            self.handshaking -= 1
        if self.refuse_status is not None:
            return conn.respond(self.refuse_status, "refused by test CPMS\n")
        return None

    async def _handler(self, conn: ServerConnection) -> None:
        with self.failures.guard():
            await self._serve(conn)

    async def _serve(self, conn: ServerConnection) -> None:
        cpid = conn.request.path.rsplit("/", 1)[-1] if conn.request else "?"
        self.connects += 1
        self.conns[cpid] = conn
        self.chosen[cpid] = conn.subprotocol
        try:
            async for message in conn:
                if self.garbage_proof:
                    text = message if isinstance(message, str) else message.decode("latin-1")
                    self.frames[cpid].append(text)
                    call = _CALL_ID.match(text)
                    if self.auto_answer and call:
                        answer = json.dumps(self.default_answer)
                        await conn.send(f'[3,"{call.group(1)}",{answer}]')
                    continue
                assert isinstance(message, str)
                self.frames[cpid].append(message)
                frame = json.loads(message)
                if self.auto_answer and frame[0] == 2:
                    payload = self.answers.get(frame[2], self.default_answer)
                    await conn.send(json.dumps([3, frame[1], payload]))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed[cpid] = conn.close_code

    async def send(self, cpid: str, text: str) -> None:
        await self.conns[cpid].send(text)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = PATIENCE) -> None:
        await wait_for(predicate, timeout)


async def wait_for(predicate: Callable[[], bool], timeout: float = PATIENCE) -> None:
    """Poll `predicate` until true; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def recv_json(ws: ClientConnection, timeout: float = PATIENCE) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))
