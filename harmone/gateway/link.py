"""The box's end of the link to its cloud: outbound only, one WebSocket (`websockets`).

`pair` exchanges a one-time code for the box's credential and its first configuration.
`BoxLink.run` keeps the link up (reconnecting with backoff) and, while it is up:

* says `hello` (software version, configuration version in force, certificate fingerprint,
  start time, clock, outbox backlog) and learns from `welcome` what the cloud has applied;
* applies each `config` snapshot (stores it first, so a restart without the WAN runs it) and
  answers `applied`;
* sends the outbox in sequence order, one batch at a time, and deletes what `ack` confirms.

A box whose credential the cloud refuses as revoked stops trying (it keeps serving its
chargers from the cached configuration); any other failure is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from harmone import __version__
from harmone.clock import utcnow
from harmone.errors import AuthError, ConfigError, HarmoneError
from harmone.gateway.protocol import LINK_PATH, REVOKED_CLOSE, decode, encode
from harmone.store.box import BoxRepo

__all__ = ["BoxLink", "Paired", "link_url", "pair"]

log = logging.getLogger(__name__)

Apply = Callable[[Mapping[str, Any]], Awaitable[None]]


def link_url(cloud_url: str) -> str:
    """The link's WebSocket URL for a cloud given as http(s)://host[:port] (or ws(s)://)."""
    url = cloud_url.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    ws = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(scheme.lower())
    if not sep or ws is None or not rest:
        raise ConfigError(f"--cloud must look like https://host[:port], got {cloud_url!r}")
    return f"{ws}://{rest}{LINK_PATH}"


def _refusal(exc: InvalidStatus) -> str:
    try:
        return str(json.loads(exc.response.body or b"{}").get("detail") or exc)
    except ValueError:
        return str(exc)


class _Refused(AuthError):
    """The cloud refused this box's credential (the message says why)."""


@dataclass(frozen=True, slots=True)
class Paired:
    gateway_id: str
    credential: str
    site_uid: str
    snapshot: dict[str, Any]


async def pair(cloud_url: str, code: str, ssl_context: ssl.SSLContext | None) -> Paired:
    """Exchange `code` for this box's credential; AuthError with the cloud's reason."""
    url = link_url(cloud_url)
    try:
        async with connect(
            url,
            additional_headers={"Authorization": f"Pairing {code}"},
            ssl=ssl_context if url.startswith("wss:") else None,
            open_timeout=15,
            max_size=16 << 20,
            proxy=None,  # see BoxLink.run
        ) as ws:
            message = decode(await asyncio.wait_for(ws.recv(), 15))
    except InvalidStatus as exc:
        raise AuthError(f"the cloud refused the pairing: {_refusal(exc)}") from None
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise ConfigError(f"cannot reach the cloud at {cloud_url}: {exc}") from None
    if message.get("type") == "refused":
        raise AuthError(f"the cloud refused the pairing: {message.get('detail')}")
    if message.get("type") != "paired":
        raise AuthError("the cloud did not pair this box")
    return Paired(
        str(message["gateway_id"]),
        str(message["credential"]),
        str(message["site_uid"]),
        dict(message["snapshot"]),
    )


class BoxLink:
    """See the module docstring. `state`: connecting, online, offline or revoked."""

    def __init__(
        self,
        repo: BoxRepo,
        cloud_url: str,
        credential: str,
        apply: Apply,
        *,
        fingerprint: str | None,
        ssl_context: ssl.SSLContext | None,
        started_at: datetime,
        backoff_max: float = 10.0,
        status_interval: float = 5.0,
    ) -> None:
        self._repo = repo
        self._url = link_url(cloud_url)
        self._credential = credential
        self._apply = apply
        self._fingerprint = fingerprint
        #: The cloud this box is paired with (shown on the box's page).
        self.cloud = cloud_url
        self._ssl = ssl_context if self._url.startswith("wss:") else None
        self._started_at = started_at
        self.backoff_max = backoff_max
        self.status_interval = status_interval
        self.state = "connecting"
        self.last_error: str | None = None
        self.last_contact: datetime | None = None
        self.wake = asyncio.Event()
        self._acked = 0
        self._ack_event = asyncio.Event()
        self._stopping = asyncio.Event()
        self._ws: ClientConnection | None = None

    @property
    def fingerprint(self) -> str | None:
        """SHA-256 of the box's certificate (shown on the box's page, sent to the cloud)."""
        return self._fingerprint

    async def run(self) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                async with connect(
                    self._url,
                    additional_headers={"Authorization": f"Bearer {self._credential}"},
                    ssl=self._ssl,
                    open_timeout=10,
                    ping_interval=5,
                    ping_timeout=10,
                    max_size=16 << 20,
                    # Direct: a proxy from the environment is not used (not supported yet).
                    proxy=None,
                ) as ws:
                    delay = 0.2
                    self._ws = ws
                    await self._session(ws)
                if ws.close_code == REVOKED_CLOSE:
                    self.last_error = "revoked in the cloud console"
                    await self._revoked()
                    return
                self.last_error = f"link closed ({ws.close_code})"
            except (InvalidStatus, _Refused) as exc:
                self.last_error = _refusal(exc) if isinstance(exc, InvalidStatus) else str(exc)
                if "revoked" in self.last_error:
                    await self._revoked()
                    return
                log.warning("gateway link refused by the cloud: %s", self.last_error)
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == REVOKED_CLOSE:
                    self.last_error = "revoked in the cloud console"
                    await self._revoked()
                    return
                self.last_error = f"link closed: {exc}"
            except (OSError, TimeoutError, WebSocketException, ValueError, KeyError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self._ws = None
            if self._stopping.is_set():
                return
            if self.state != "offline":
                log.warning(
                    "gateway link down (%s): serving from the cached configuration", self.last_error
                )
            self.state = "offline"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(self.backoff_max, delay * 2)

    async def stop(self, task: asyncio.Task[None], grace: float = 5.0) -> None:
        """Close the link and let `task` (running `run`) finish what it is writing; it is
        cancelled only if it does not finish within `grace` (never mid-transaction)."""
        self._stopping.set()
        self.wake.set()
        self._ack_event.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(1001, "box shutting down")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), grace)
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _revoked(self) -> None:
        self.state = "revoked"
        await self._repo.set_revoked()
        log.warning(
            "this box was revoked in the cloud console: it keeps serving its chargers from the "
            "cached configuration; pair it again (harmone gateway --pair CODE) to reconnect"
        )

    async def _session(self, ws: ClientConnection) -> None:
        ident = await self._repo.identity()
        assert ident is not None
        # A fresh link resends every charger's state: the cloud may have restarted meanwhile.
        await self._repo.forget_sent()
        self.wake.set()
        await ws.send(
            encode(
                "hello",
                software_version=__version__,
                config_version=ident.config_version,
                fingerprint=self._fingerprint,
                started_at=self._started_at.isoformat(),
                now=utcnow().isoformat(),
                backlog=await self._repo.backlog(),
            )
        )
        welcome = decode(await asyncio.wait_for(ws.recv(), 30))
        if welcome.get("type") == "refused":
            raise _Refused(str(welcome.get("detail")))
        if welcome.get("type") != "welcome":
            raise ValueError("the cloud did not welcome this box")
        self._acked = max(int(welcome.get("acked") or 0), 0)
        await self._repo.ack(self._acked)
        self.state = "online"
        self.last_contact = utcnow()
        log.info("gateway link up; the cloud has applied events up to %d", self._acked)
        done = asyncio.Event()
        sender = asyncio.create_task(self._send_loop(ws, done), name="gateway outbox sender")
        try:
            async for raw in ws:
                self.last_contact = utcnow()
                message = decode(raw)
                kind = message["type"]
                if kind == "ack":
                    seq = int(message["seq"])
                    await self._repo.ack(seq)
                    self._acked = max(self._acked, seq)
                    self._ack_event.set()
                elif kind == "config":
                    version, snapshot = int(message["version"]), message["snapshot"]
                    await self._repo.save_config(version, snapshot)
                    try:
                        await self._apply(snapshot)
                    except HarmoneError as exc:
                        # Not retried by reconnecting: the same snapshot would fail again.
                        # What could be applied is; the cloud sees the version not applied.
                        log.warning("configuration version %d not fully applied: %s", version, exc)
                        continue
                    await ws.send(encode("applied", version=version))
                    log.info("configuration version %d from the cloud in force", version)
        finally:
            # The sender stops by itself (it may be inside a transaction: no cancelling).
            done.set()
            self.wake.set()
            self._ack_event.set()
            results = await asyncio.gather(sender, return_exceptions=True)
            if isinstance(results[0], Exception) and not isinstance(results[0], ConnectionClosed):
                log.warning("gateway outbox sender failed: %s", results[0])

    async def _send_loop(self, ws: ClientConnection, done: asyncio.Event) -> None:
        sent = self._acked
        while not done.is_set():
            events = await self._repo.pending(sent)
            if events:
                self._ack_event.clear()
                await ws.send(
                    encode(
                        "events",
                        events=[e.wire() for e in events],
                        backlog=await self._repo.backlog(),
                    )
                )
                sent = events[-1].seq
                # One batch in flight: the next is sent once this one is acknowledged, so a
                # lost link costs at most one batch to resend.
                while self._acked < sent and not done.is_set():
                    await asyncio.wait_for(self._ack_event.wait(), 60)
                    self._ack_event.clear()
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.status_interval)
            if not self.wake.is_set() and not done.is_set():
                await ws.send(
                    encode("status", backlog=await self._repo.backlog(), now=utcnow().isoformat())
                )
