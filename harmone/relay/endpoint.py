"""The OCPP endpoint: a charger's WebSocket handshake on `/{site-UID}/{chargePointId}`.

The handshake is where most field problems show, so every decision here ends in the site's
connection log with a reason a support person can act on. The charger's CPMS is dialled
*before* the charger's handshake is answered, so that the OCPP version is the one the CPMS
chose and a CPMS refusal (401, 404, …) reaches the charger as the same HTTP status. Refusals
are plain HTTP responses; an accepted charger's connection is handed to picows and relayed
by a `ChargerLink`.

The site and the charger's own CPMS come from the registry's cache, and a first-time charger
is registered with the state writer's next batch: a reconnect storm does not queue on the
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass

from harmone.clock import Clock
from harmone.errors import HarmoneError, UpstreamUnavailable
from harmone.ocpp.session import ChargerSession, SessionLimits
from harmone.ocpp.standalone import StandaloneResponder
from harmone.ocpp.versions import SUPPORTED_SUBPROTOCOLS, version_for_subprotocol
from harmone.relay.admission import (
    Refusal,
    choose_subprotocol,
    no_identity_refusal,
    restrict_to_identity,
    split_ocpp_path,
)
from harmone.relay.charger_auth import ChargerAuthenticator
from harmone.relay.dialer import DialRequest
from harmone.relay.link import ChargerLink, LinkServices, LinkSetup
from harmone.relay.offline import JOURNALED, JournalStorage, OfflineJournal
from harmone.relay.registry import RelayRegistry
from harmone.relay.upgrade import UpgradeRequest, deflate_agreement, refusal, upgrade_problem
from harmone.relay.upstream import CpmsConnection, UpstreamRefused, cpms_endpoint
from harmone.relay.websocket import Inflater, TextSocket, WireLog, adopt_charger_transport
from harmone.store.journal import JournalEntry
from harmone.store.records import Attempt

__all__ = ["OcppEndpoint", "Transport"]

log = logging.getLogger(__name__)

#: What the endpoint needs of the charger's connection (an asyncio transport).
Transport = asyncio.Transport

#: A normalised upgrade request for picows, which checks it and answers 101: the real one
#: was checked here already (picows is stricter than RFC 6455 about `Connection`).
_HEAD = (
    "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
)


def _transaction_ids(clock: Clock) -> itertools.count[int]:
    # Seeded from the clock so that ids handed out after a restart do not repeat earlier ones
    # (tenths of a second since 2024 fit OCPP 1.6's int32 transactionId for years).
    since_2024 = clock.now().timestamp() - 1_704_067_200
    return itertools.count(int(since_2024 * 10) % 2_000_000_000 + 1)


@dataclass(frozen=True, slots=True)
class _Caller:
    """Who is knocking: for the connection log."""

    site_uid: str
    identity: str
    remote: str | None
    offered: tuple[str, ...]


class _Slot:
    """One handshake's place within `RelayConfig.max_concurrent_handshakes`."""

    __slots__ = ("gate", "held")

    def __init__(self, gate: asyncio.Semaphore) -> None:
        self.gate = gate
        self.held = False

    async def take(self) -> None:
        await self.gate.acquire()
        self.held = True  # (not if cancelled while waiting: nothing to give back then)

    def give(self) -> None:
        if self.held:
            self.held = False
            self.gate.release()


#: the handshake the running task is working on (its slot)
_SLOT: ContextVar[_Slot | None] = ContextVar("harmone_handshake_slot", default=None)


class OcppEndpoint:
    """Admits chargers into `registry`; `journal` keeps hold-mode sites' offline messages."""

    def __init__(self, registry: RelayRegistry, journal: JournalStorage | None = None) -> None:
        self.registry = registry
        self.journal = journal
        counter = _transaction_ids(registry.clock)
        self.responder = StandaloneResponder(
            registry.clock,
            lambda: next(counter),
            heartbeat_interval=registry.config.heartbeat_interval,
        )
        cfg = registry.config
        self.limits = SessionLimits(
            call_timeout=cfg.call_timeout, flood_rate=cfg.flood_rate, flood_burst=cfg.flood_burst
        )
        self.authenticator = ChargerAuthenticator(
            registry.directory,
            max_failures=cfg.auth_max_failures,
            window=cfg.auth_failure_window,
            clock=registry.clock.monotonic,
        )
        self.services = LinkServices(
            registry, registry.dialer, cfg, registry.clock, registry.metrics
        )
        #: chargers that may have a journal backlog or id mappings (journals add to it)
        self._journaled: set[tuple[str, str]] = set()
        self._journaled_loaded: asyncio.Task[None] | None = None
        #: handshakes worked on at once (`RelayConfig.max_concurrent_handshakes`)
        self._gate = asyncio.Semaphore(cfg.max_concurrent_handshakes)
        #: Other processes write the same journal (a cluster's nodes): the set of chargers
        #: with a backlog cannot be cached here, every handshake looks.
        self.journal_shared = False

    async def handshake(
        self, request: UpgradeRequest, transport: Transport, remote: str | None
    ) -> None:
        """Answer one upgrade request on `transport` (paused): refuse it, or relay it.

        Thousands at once (a reconnect storm) are taken a bounded number at a time: every
        handshake in progress adds its steps to each turn of the event loop, and a long turn
        delays everything else, the API's requests and the connected chargers' frames."""
        slot = _Slot(self._gate)
        token = _SLOT.set(slot)
        try:
            await slot.take()
            await self._handshake(request, transport, remote)
        finally:
            slot.give()
            _SLOT.reset(token)

    @contextlib.asynccontextmanager
    async def _waiting(self) -> AsyncIterator[None]:
        """Out of the bound while a handshake only waits (its CPMS's answer, the batch that
        registers it): the bound is on handshakes that keep the loop busy, not on those that
        wait for someone else (the dialer has its own bound)."""
        slot = _SLOT.get()
        if slot is None:
            yield
            return
        slot.give()
        try:
            yield
        finally:
            await slot.take()

    async def _handshake(
        self, request: UpgradeRequest, transport: Transport, remote: str | None
    ) -> None:
        path = request.target
        segments = path.split("?", 1)[0].strip("/")
        caller = _Caller(
            segments.split("/", 1)[0],
            segments.rpartition("/")[2] if "/" in segments else "",
            remote,
            tuple(request.tokens("sec-websocket-protocol")),
        )
        # which check refused it, for the metrics (`harmone.metrics.REFUSAL_REASONS`)
        stage = "bad_request"
        try:
            problem = upgrade_problem(request)
            if problem is not None:
                raise Refusal(*problem)
            stage = "bad_url"
            site_uid, identity = await self._split(path)
            stage = "unknown_site"
            site = await self.registry.cache.site(site_uid)
            if site is None:
                raise Refusal(
                    404,
                    "no such site: check the OCPP URL in the charger (copy it "
                    "from the site's Control Hub)",
                )
            stage = "unsupported_version"
            offered = choose_subprotocol(caller.offered, SUPPORTED_SUBPROTOCOLS)
            stage = "invalid_identity"
            usable = restrict_to_identity(offered, identity)
            authorization = request.header("authorization")
            if site.charger_auth:
                stage = "charger_auth"
                # Before the CPMS is dialled and before an older connection of this identity
                # is replaced: an unauthenticated charger must not reach the CPMS or displace
                # anyone.
                await self.authenticator.check(site_uid, identity, authorization)
        except Refusal as refused:
            if stage == "bad_url" and refused.status == 400:
                stage = "invalid_identity"  # the URL's shape is right, the identity is not
            self.registry.metrics.refused[stage] += 1
            self._attempt(caller, False, refused.reason, refused.status)
            transport.write(
                refusal(refused.status, refused.answer or refused.reason, refused.headers)
            )
            transport.close()
            return
        key = (site_uid, identity)
        async with self.registry.admission(key):
            old = self.registry.link(*key)
            if old is not None:
                old.close_now(1000, "replaced by a new connection from the same charger")
                try:
                    await asyncio.wait_for(old.closed.wait(), 5.0)
                except TimeoutError:
                    log.warning("site=%s charger=%s old connection did not close", *key)
            await self._admit(
                request,
                transport,
                caller,
                key,
                usable,
                authorization,
                strict=site.offline_mode == "strict",
                site_cpms=site.cpms_url,
                site_secondary=(site.secondary_cpms_url, site.secondary_rule),
            )

    async def _split(self, path: str) -> tuple[str, str]:
        try:
            return split_ocpp_path(path)
        except Refusal as refused:
            # One segment: a site UID without the charger's id, or the charger's id without a
            # site UID (the CPMS's URL pattern pasted instead of HARMON-E's).
            lone = path.split("?", 1)[0].strip("/")
            if refused.status == 404 and lone and "/" not in lone:
                known = await self.registry.cache.site(lone) is not None
                raise no_identity_refusal(lone, site_known=known) from None
            raise

    async def _admit(
        self,
        request: UpgradeRequest,
        transport: Transport,
        caller: _Caller,
        key: tuple[str, str],
        usable: list[str],
        authorization: str | None,
        *,
        strict: bool,
        site_cpms: str | None,
        site_secondary: tuple[str | None, str] = (None, "read-only"),
    ) -> None:
        cfg = self.registry.config
        site_uid, identity = key
        ctx = f"site={site_uid} charger={identity}"
        route = await self.registry.cache.route(site_uid, identity)
        cpms_url = route.cpms_url or site_cpms
        upstream: CpmsConnection | None = None
        pending: asyncio.Task[CpmsConnection] | None = None
        upstream_error: str | None = None
        stage = "storage"  # what refused it, for the metrics
        try:
            if cpms_url is not None:
                task = asyncio.create_task(
                    self.registry.dialer.dial(
                        DialRequest(
                            cpms_endpoint(cpms_url, identity), tuple(usable), authorization, ctx
                        )
                    )
                )
                async with self._waiting():
                    done, _ = await asyncio.wait({task}, timeout=cfg.upstream_connect_timeout)
                if not done:
                    pending = task
                    upstream_error = (
                        f"CPMS did not answer within {cfg.upstream_connect_timeout:g} s; "
                        "still trying"
                    )
                else:
                    try:
                        upstream = task.result()
                    except UpstreamRefused as exc:
                        stage = "cpms_refused"
                        raise Refusal(exc.status, str(exc)) from None
                    except UpstreamUnavailable as exc:
                        upstream_error = str(exc)
                if strict and upstream is None:
                    # strict mode: like a direct connection, no CPMS means no connection
                    stage = "cpms_unavailable"
                    raise Refusal(503, f"{upstream_error} (the site is in strict offline mode)")
            link = await self._open_link(
                request,
                transport,
                caller,
                key,
                usable,
                LinkSetup(
                    usable[0],
                    cpms_url,
                    authorization,
                    strict,
                    route.secondary_cpms_url or site_secondary[0],
                    site_secondary[1],
                ),
                (upstream, upstream_error),
                known=route.known,
            )
        except BaseException as exc:
            if upstream is not None:
                upstream.sock.close(1000, "charger gone")
            if pending is not None:
                pending.cancel()
            if isinstance(exc, Refusal):
                self.registry.metrics.refused[stage] += 1
                self._attempt(caller, False, exc.reason, exc.status)
                transport.write(refusal(exc.status, exc.answer or exc.reason, exc.headers))
                transport.close()
                return
            raise
        link.start(upstream, pending)
        transport.resume_reading()  # paused by the front door while the handshake ran
        if upstream_error is not None:
            log.warning(
                "%s accepted without its CPMS (%s); answering it locally and retrying",
                ctx,
                upstream_error,
            )

    async def _open_link(
        self,
        request: UpgradeRequest,
        transport: Transport,
        caller: _Caller,
        key: tuple[str, str],
        usable: list[str],
        setup: LinkSetup,
        upstream_state: tuple[CpmsConnection | None, str | None],
        *,
        known: bool,
    ) -> ChargerLink:
        """Accept the charger (101) and build its link; Refusal(503) if it cannot be stored."""
        upstream, upstream_error = upstream_state
        cpms_url, strict = setup.cpms_url, setup.strict
        cfg = self.registry.config
        site_uid, identity = key
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
                chosen = upstream.subprotocol
        version = version_for_subprotocol(chosen)
        assert version is not None  # usable only holds supported subprotocols
        journal: OfflineJournal | None = None
        tx_maps: dict[int, int] = {}
        if cpms_url is not None and not strict and self.journal is not None:
            # what this charger said during an earlier outage (or before a restart) is
            # replayed before any live traffic
            backlog: list[JournalEntry] = []
            if await self._may_have_backlog(key):
                backlog, tx_maps = await self.journal.backlog(site_uid, identity)
                if not backlog and not tx_maps:
                    self._journaled.discard(key)
            journal = OfflineJournal(
                self.journal, site_uid, identity, version, backlog, self._journaled
            )
        live_now = upstream is not None and not (journal and journal.pending)
        live = self.registry.live_for(key)
        now = self.registry.clock.now()
        live.ocpp_version = version.value
        live.connected = True
        live.connected_since = live.last_seen = now
        live.remote_addr = caller.remote
        # Set before the first frame is read: a BootNotification sent right after the
        # handshake must go to the CPMS, not be answered locally.
        live.upstream_connected = live_now
        live.upstream_error = upstream_error
        if not known:
            try:
                async with self._waiting():
                    await self.registry.writer.register(key)
            except HarmoneError as exc:
                live.connected = live.upstream_connected = False
                log.error("site=%s charger=%s could not be registered: %s", *key, exc)
                raise Refusal(503, "HARMON-E could not store this charger; try again") from None
            self.registry.cache.registered(site_uid, identity)
        session = ChargerSession(
            version,
            local_answer=self.responder.answer,
            limits=self.limits,
            upstream_up=live_now,
            now=self.registry.clock.monotonic(),
            journaled=JOURNALED[version] if journal is not None else frozenset(),
            watched=self.registry.watched_actions(site_uid),
        )
        for local_id, cpms_id in tx_maps.items():
            session.map_transaction(local_id, cpms_id)
        deflate = deflate_agreement(request)
        inflater = Inflater(cfg.max_frame_bytes, deflate[1]) if deflate else None
        sock = TextSocket(cfg.max_frame_bytes, self.registry.clock.monotonic, inflater)
        headers = [("Sec-WebSocket-Protocol", chosen)]
        if deflate is not None:
            headers.append(("Sec-WebSocket-Extensions", deflate[0]))
        link = ChargerLink(
            self.services,
            dataclasses.replace(setup, subprotocol=chosen),
            live,
            session,
            sock,
            journal,
        )
        adopt_charger_transport(
            transport,
            _HEAD.format(key=request.header("sec-websocket-key")).encode(),
            sock,
            headers,
            max_frame=cfg.max_frame_bytes,
            wire_log=WireLog(f"site={site_uid} charger={identity}"),
        )
        self.registry.admit(link)
        self.registry.metrics.accepted += 1
        self._attempt(caller, True, None, 101, chosen)
        return link

    async def _may_have_backlog(self, key: tuple[str, str]) -> bool:
        """Whether `key` may have journal entries or id mappings (most chargers have none:
        their handshake then skips the look-up)."""
        if self.journal_shared:
            return True
        if self._journaled_loaded is None:
            self._journaled_loaded = asyncio.get_running_loop().create_task(self._load_keys())
        await asyncio.shield(self._journaled_loaded)
        return key in self._journaled

    async def _load_keys(self) -> None:
        assert self.journal is not None
        self._journaled |= await self.journal.chargers_with_backlog()

    def _attempt(
        self,
        caller: _Caller,
        accepted: bool,
        reason: str | None,
        status: int | None = None,
        subprotocol: str | None = None,
    ) -> None:
        self.registry.log_attempt(
            Attempt(
                at=self.registry.clock.now(),
                site_uid=caller.site_uid,
                charge_point_id=caller.identity,
                remote_addr=caller.remote,
                accepted=accepted,
                reason=reason,
                subprotocol=subprotocol,
                offered_subprotocols=caller.offered,
                http_status=status,
            )
        )
