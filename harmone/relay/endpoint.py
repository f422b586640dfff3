"""The OCPP endpoint: an ASGI WebSocket handler for `/{site-UID}/{chargePointId}`.

The handshake is where most field problems show, so every decision here ends in the site's
connection log with a reason a support person can act on. The charger's CPMS is dialled
*before* the charger's handshake is answered, so that the OCPP version is the one the CPMS
chose and a CPMS refusal (401, 404, …) reaches the charger as the same HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection

from harmone.errors import UpstreamUnavailable
from harmone.ocpp.session import ChargerSession, SessionLimits
from harmone.ocpp.standalone import StandaloneResponder
from harmone.ocpp.versions import SUPPORTED_SUBPROTOCOLS, version_for_subprotocol
from harmone.relay.admission import Refusal, choose_subprotocol, split_ocpp_path
from harmone.relay.charger_auth import ChargerAuthenticator
from harmone.relay.hub import RelayHub
from harmone.relay.link import ChargerLink
from harmone.relay.offline import JOURNALED, OfflineJournal
from harmone.relay.state import LiveCharger
from harmone.relay.upstream import UpstreamRefused, cpms_endpoint
from harmone.store.journal import JournalRepo
from harmone.store.records import Attempt

__all__ = ["OcppEndpoint"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _transaction_ids() -> Callable[[], int]:
    # Seeded from the clock so that ids handed out after a restart do not repeat earlier ones
    # (tenths of a second since 2024 fit OCPP 1.6's int32 transactionId for years).
    counter = itertools.count(int((time.time() - 1_704_067_200) * 10) % 2_000_000_000 + 1)
    return lambda: next(counter)


class OcppEndpoint:
    """ASGI app for WebSocket scopes; `hub` owns the resulting links."""

    def __init__(self, hub: RelayHub, journal: JournalRepo | None = None) -> None:
        self.hub = hub
        #: where hold-mode sites keep what their chargers say while the CPMS is away
        self.journal = journal
        self.responder = StandaloneResponder(
            hub.clock, _transaction_ids(), heartbeat_interval=hub.config.heartbeat_interval
        )
        cfg = hub.config
        self.limits = SessionLimits(
            call_timeout=cfg.call_timeout, flood_rate=cfg.flood_rate, flood_burst=cfg.flood_burst
        )
        self.authenticator = ChargerAuthenticator(
            hub.directory.chargers,
            max_failures=cfg.auth_max_failures,
            window=cfg.auth_failure_window,
            clock=hub.clock.monotonic,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope.get("path", "/"))
        client = scope.get("client")
        remote = str(client[0]) if client else None
        offered = [str(p) for p in scope.get("subprotocols") or []]
        first_segment = path.split("?", 1)[0].strip("/").split("/", 1)[0]
        identity = (
            path.split("?", 1)[0].strip("/").rpartition("/")[2] if "/" in path.strip("/") else ""
        )

        def attempt(
            accepted: bool,
            reason: str | None,
            status: int | None = None,
            subprotocol: str | None = None,
        ) -> None:
            self.hub.log_attempt(
                Attempt(
                    at=self.hub.clock.now(),
                    site_uid=first_segment,
                    charge_point_id=identity,
                    remote_addr=remote,
                    accepted=accepted,
                    reason=reason,
                    subprotocol=subprotocol,
                    offered_subprotocols=tuple(offered),
                    http_status=status,
                )
            )

        try:
            site_uid, identity = split_ocpp_path(path)
            site = await self.hub.directory.sites.find(site_uid)
            if site is None:
                raise Refusal(
                    404,
                    "no such site: check the OCPP URL in the charger (copy it "
                    "from the site's Control Hub)",
                )
            usable = choose_subprotocol(offered, SUPPORTED_SUBPROTOCOLS)
        except Refusal as refusal:
            attempt(False, refusal.reason, refusal.status)
            await _deny(send, refusal.status, refusal.answer or refusal.reason, refusal.headers)
            return

        headers = dict(scope.get("headers") or [])
        auth_raw = headers.get(b"authorization")
        authorization = auth_raw.decode("latin-1") if auth_raw is not None else None
        if site.charger_auth:
            # Before the CPMS is dialled and before an older connection of this identity is
            # replaced: an unauthenticated charger must not reach the CPMS or displace anyone.
            try:
                await self.authenticator.check(site_uid, identity, authorization)
            except Refusal as refusal:
                attempt(False, refusal.reason, refusal.status)
                await _deny(send, refusal.status, refusal.answer or refusal.reason, refusal.headers)
                return
        key = (site_uid, identity)
        lock = self.hub.lock_for(key)
        try:
            async with lock:
                old = self.hub.links.get(key)
                if old is not None:
                    await old.close(1000, "replaced by a new connection from the same charger")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(old.closed.wait(), 5.0)
                charger = await self.hub.directory.chargers.find(site_uid, identity)
                cpms_url = (
                    charger.cpms_url if charger and charger.cpms_url else None
                ) or site.cpms_url
                link = await self._admit(
                    scope,
                    send,
                    site_uid,
                    identity,
                    usable,
                    cpms_url,
                    authorization,
                    remote,
                    attempt,
                    registered=charger is not None,
                    strict=site.offline_mode == "strict",
                )
        finally:
            self.hub.release_lock(key, lock)
        if link is not None:
            await link.run(receive)

    async def _admit(
        self,
        scope: Scope,
        send: Send,
        site_uid: str,
        identity: str,
        usable: list[str],
        cpms_url: str | None,
        authorization: str | None,
        remote: str | None,
        attempt: Callable[..., None],
        *,
        registered: bool,
        strict: bool = False,
    ) -> ChargerLink | None:
        cfg = self.hub.config
        upstream: ClientConnection | None = None
        pending: asyncio.Task[ClientConnection] | None = None
        upstream_error: str | None = None
        if cpms_url is not None:
            task = asyncio.create_task(
                self.hub.dial(
                    cpms_endpoint(cpms_url, identity),
                    usable,
                    authorization,
                    open_timeout=max(10.0, cfg.upstream_connect_timeout),
                    max_size=cfg.max_frame_bytes,
                    proxy=cfg.upstream_proxy,
                    ca_file=cfg.upstream_ca,
                )
            )
            done, _ = await asyncio.wait({task}, timeout=cfg.upstream_connect_timeout)
            if not done:
                pending = task
                upstream_error = (
                    f"CPMS did not answer within {cfg.upstream_connect_timeout:g} s; still trying"
                )
            else:
                try:
                    upstream = task.result()
                except UpstreamRefused as exc:
                    attempt(False, str(exc), exc.status)
                    await _deny(send, exc.status, str(exc))
                    return None
                except UpstreamUnavailable as exc:
                    upstream_error = str(exc)
            if strict and upstream is None:
                # strict mode: like a direct connection, no CPMS means no connection
                if pending is not None:
                    pending.cancel()
                    await asyncio.gather(pending, return_exceptions=True)
                reason = f"{upstream_error} (the site is in strict offline mode)"
                attempt(False, reason, 503)
                await _deny(send, 503, reason)
                return None
        chosen = usable[0]
        if upstream is not None:
            if upstream.subprotocol is None:
                log.warning(
                    "site=%s charger=%s CPMS confirmed no subprotocol; using %s",
                    site_uid,
                    identity,
                    chosen,
                )
            else:
                chosen = str(upstream.subprotocol)
        version = version_for_subprotocol(chosen)
        assert version is not None  # usable only holds supported subprotocols
        journal: OfflineJournal | None = None
        tx_maps: dict[int, int] = {}
        if cpms_url is not None and not strict and self.journal is not None:
            # what this charger said during an earlier outage (or before a restart) is
            # replayed before any live traffic
            journal = OfflineJournal(
                self.journal,
                site_uid,
                identity,
                version,
                await self.journal.pending(site_uid, identity),
            )
            tx_maps = await self.journal.tx_maps(site_uid, identity)
        live_now = upstream is not None and not (journal and journal.pending)
        try:
            if not registered:
                await self.hub.directory.chargers.register(site_uid, identity)
            await send({"type": "websocket.accept", "subprotocol": chosen})
        except BaseException:
            if upstream is not None:
                await upstream.close(1000, "charger gone")
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            raise
        live = self.hub.live.get((site_uid, identity))
        if live is None:
            live = LiveCharger(site_uid, identity)
            live.frames = type(live.frames)(maxlen=cfg.inspector_frames)
            self.hub.live[(site_uid, identity)] = live
        now = self.hub.clock.now()
        live.ocpp_version = version.value
        live.connected = True
        live.connected_since = live.last_seen = now
        live.remote_addr = remote
        # Set before the first frame is read: a BootNotification sent right after the
        # handshake must go to the CPMS, not be answered locally.
        live.upstream_connected = live_now
        live.upstream_error = upstream_error
        session = ChargerSession(
            version,
            local_answer=self.responder.answer,
            limits=self.limits,
            upstream_up=live_now,
            now=self.hub.clock.monotonic(),
            journaled=JOURNALED[version] if journal is not None else frozenset(),
        )
        for local_id, cpms_id in tx_maps.items():
            session.map_transaction(local_id, cpms_id)
        link = ChargerLink(
            self.hub,
            live,
            session,
            send,
            subprotocol=chosen,
            cpms_url=cpms_url,
            authorization=authorization,
            upstream=upstream,
            pending_dial=pending,
            config=cfg,
            clock=self.hub.clock,
            journal=journal,
            strict=strict,
        )
        self.hub.attach(link)
        attempt(True, None, 101, chosen)
        return link


async def _deny(
    send: Send, status: int, reason: str, headers: Sequence[tuple[str, str]] = ()
) -> None:
    """Refuse at the handshake with an HTTP status (ASGI WebSocket Denial Response);
    `headers` are added to the response (e.g. WWW-Authenticate on a 401)."""
    body = (reason + "\n").encode()
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})
