"""Gateway sites, cloud side (issue 12): pairing a box, its credential, its link and health.

* **Pairing.** An admin creates a one-time code for a gateway site (`create_pairing_code`,
  valid `code_ttl`); the box exchanges it (`pair`) for a long-lived credential
  `gw_<id>_<secret>`, of which only the SHA-256 is stored. Pairing a new box revokes the
  site's earlier one (one box per site). `revoke` refuses the box from then on and closes its
  link.
* **The link** (`serve_link`, one per box, opened by the box): configuration down as
  versioned snapshots, pushed within `poll_interval` of a change (a site or charger change
  wakes it at once, as a `ChangeWatcher`); events up, applied once each by sequence number
  and acknowledged (`harmone.gateway.protocol`).
* **Health** (`status`): online/offline, last contact, software version, uptime, clock
  offset, outbox backlog, configuration version sent and applied, certificate fingerprint.

Errors: AuthError for a bad code or credential (with a sentence saying what to do), Conflict
for a site that is not a gateway site, NotFound.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from harmone.clock import utcnow
from harmone.domain import ChargerIdentity, SiteSettings
from harmone.errors import AuthError, Conflict, NotFound
from harmone.gateway.protocol import REVOKED_CLOSE, decode, digest, encode
from harmone.loadmgmt.controller import Sample
from harmone.loadmgmt.service import SiteLoadStatus
from harmone.loadmgmt.status_codec import sample_from_json, status_from_json
from harmone.relay.state import FrameRecord, FrameRing
from harmone.store.gateways import Gateway
from harmone.store.records import Attempt, ChargerState
from harmone.store.store import Store

__all__ = [
    "GatewayService",
    "GatewayStatus",
    "LinkSocket",
    "Paired",
    "PairingCode",
    "ReportedLoad",
    "normalise_code",
    "parse_time",
]

log = logging.getLogger(__name__)

_PARTIES = ("charger", "cpms", "harmone")
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read out loud, typed by hand


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normalise_code(code: str) -> str:
    return "".join(c for c in code.upper() if c.isalnum())


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PairingCode:
    code: str
    site_uid: str
    expires_at: datetime

    def command(self, cloud_url: str) -> str:
        """The one line an installer runs on the box (the API and the console show it)."""
        return f"harmone gateway --cloud {cloud_url} --pair {self.code} --db box.db"


@dataclass(frozen=True, slots=True)
class Paired:
    gateway_id: str
    credential: str
    site_uid: str


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    paired: bool
    gateway_id: str | None = None
    online: bool = False
    revoked: bool = False
    last_contact: datetime | None = None
    software_version: str | None = None
    fingerprint: str | None = None
    started_at: datetime | None = None
    clock_offset: float | None = None
    backlog: int = 0
    config_version: int = 0
    config_applied: int = 0
    #: The chargers shown are as last reported by a box that is not connected now.
    chargers_stale: bool = False


@dataclass(frozen=True, slots=True)
class ReportedLoad:
    """What a gateway site's box last reported of its load management."""

    status: SiteLoadStatus
    #: when the cloud received it
    reported_at: datetime
    #: the box is offline: this is what it reported before
    stale: bool


class LinkSocket(Protocol):
    """The cloud's end of a box's WebSocket (Starlette's WebSocket satisfies it)."""

    async def send_text(self, data: str) -> None: ...

    async def receive_text(self) -> str: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


@dataclass(eq=False)
class _Session:
    gateway: Gateway
    socket: LinkSocket
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sent_version: int = -1
    last_contact: datetime = field(default_factory=utcnow)
    backlog: int = 0

    async def send(self, kind: str, **fields: Any) -> None:
        async with self.send_lock:
            await self.socket.send_text(encode(kind, **fields))


class GatewayService:
    """See the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        announce: Callable[[tuple[Literal["changed", "frame"], tuple[str, str]]], None]
        | None = None,
        code_ttl: timedelta = timedelta(minutes=30),
        poll_interval: float = 2.0,
        hello_timeout: float = 30.0,
    ) -> None:
        self._store = store
        #: Tells the live views (the relay's event bus) that a gateway charger's state or
        #: frames changed, as the relay does for its own chargers.
        self._announce = announce or (lambda event: None)
        self.code_ttl = code_ttl
        #: The longest a configuration change waits before it is pushed (the changes that no
        #: watcher announces, e.g. load management's, are found by this poll).
        self.poll_interval = poll_interval
        self.hello_timeout = hello_timeout
        self._sessions: dict[str, _Session] = {}
        #: The message inspector's frames of gateway sites' chargers, as their boxes sent
        #: them (in memory, bounded like the relay's own).
        self._frames: dict[tuple[str, str], FrameRing] = {}
        #: Load-management status per gateway site, as its box last sent it, and when.
        self._load_status: dict[str, tuple[dict[str, Any], datetime]] = {}
        #: Load-management samples per gateway site, as its box sent them (the last 720).
        self._load_series: dict[str, deque[dict[str, Any]]] = {}

    def load_status(self, site_uid: str) -> dict[str, Any] | None:
        """A gateway site's load-management status as its box last reported it (with
        `reported_at`, and `stale` while the box is offline), or None."""
        reported = self._load_status.get(site_uid)
        if reported is None:
            return None
        data, at = reported
        return {**data, "reported_at": at, "stale": site_uid not in self._sessions}

    def load_series(
        self, site_uid: str, since: datetime | None, limit: int
    ) -> list[dict[str, Any]] | None:
        """A gateway site's load-management samples as its box sent them (`at`, `nodes`,
        `connectors`), oldest first; None if its box sent none."""
        series = self._load_series.get(site_uid)
        if series is None:
            return None
        out = [s for s in series if since is None or s["at"] > since]
        return out[-limit:]

    def reported_load(self, site_uid: str) -> ReportedLoad | None:
        """A gateway site's load-management status as its box last reported it, read back
        into the service's own shape (the console shows it like a cloud site's), or None."""
        reported = self._load_status.get(site_uid)
        if reported is None:
            return None
        data, at = reported
        return ReportedLoad(status_from_json(data), at, site_uid not in self._sessions)

    def reported_samples(self, site_uid: str, since: datetime | None) -> list[Sample]:
        """The box's load-management samples after `since`, oldest first (none if it sent
        none)."""
        out = []
        for data in self._load_series.get(site_uid) or ():
            sample = sample_from_json(data)
            if sample is not None and (since is None or sample.at > since):
                out.append(sample)
        return out

    def frames(self, site_uid: str, charger_id: str) -> list[FrameRecord]:
        """The last frames of a gateway site's charger, as its box reported them."""
        ring = self._frames.get((site_uid, charger_id))
        return ring.records() if ring is not None else []

    # -- pairing and credentials --
    async def create_pairing_code(self, site_uid: str) -> PairingCode:
        site = await self._store.sites.get(site_uid)
        if site.type != "gateway":
            raise Conflict("only a gateway site is paired with a box: set its type to gateway")
        code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(16))
        expires = utcnow() + self.code_ttl
        await self._store.gateways.add_pairing_code(site_uid, _sha(code), expires)
        shown = "-".join(code[i : i + 4] for i in range(0, 16, 4))
        log.info("site=%s pairing code created, valid until %s", site_uid, expires.isoformat())
        return PairingCode(shown, site_uid, expires)

    async def pair(self, code: str) -> Paired:
        gateway_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        gateway = await self._store.gateways.redeem(
            _sha(normalise_code(code)), gateway_id, _sha(secret), utcnow()
        )
        if gateway is None:
            raise AuthError(
                "pairing code unknown, already used or expired: create a new one on the "
                "gateway site's Control Hub and run the command it shows"
            )
        log.info("site=%s gateway %s paired", gateway.site_uid, gateway_id)
        return Paired(gateway_id, f"gw_{gateway_id}_{secret}", gateway.site_uid)

    async def authenticate(self, authorization: str) -> Gateway:
        """The box whose credential is in the `Authorization: Bearer …` header; AuthError."""
        scheme, _, credential = authorization.partition(" ")
        prefix, _, rest = credential.strip().partition("_")
        gateway_id, _, secret = rest.partition("_")
        if scheme.lower() != "bearer" or prefix != "gw" or not gateway_id or not secret:
            raise AuthError("missing gateway credential: pair this box first")
        gateway = await self._store.gateways.get(gateway_id)
        if gateway is None or not hmac.compare_digest(gateway.secret_hash, _sha(secret)):
            raise AuthError("unknown gateway credential: pair this box again")
        if gateway.revoked_at is not None:
            raise AuthError(
                "this gateway was revoked in the cloud console: pair it again with a new code"
            )
        return gateway

    async def revoke(self, site_uid: str) -> list[str]:
        """Refuse the site's box from now on and close its link; the revoked ids."""
        await self._store.sites.get(site_uid)
        ids = await self._store.gateways.revoke_site(site_uid, utcnow())
        session = self._sessions.get(site_uid)
        if session is not None and session.gateway.id in ids:
            with contextlib.suppress(Exception):
                await session.socket.close(REVOKED_CLOSE, "gateway revoked")
        log.info("site=%s gateway(s) revoked: %s", site_uid, ", ".join(ids) or "none")
        return ids

    async def status(self, site_uid: str) -> GatewayStatus:
        await self._store.sites.get(site_uid)
        g = await self._store.gateways.of_site(site_uid)
        if g is None:
            return GatewayStatus(paired=False)
        session = self._sessions.get(site_uid)
        online = session is not None and session.gateway.id == g.id
        return GatewayStatus(
            paired=True,
            gateway_id=g.id,
            online=online,
            revoked=g.revoked_at is not None,
            last_contact=session.last_contact if session is not None and online else g.last_contact,
            software_version=g.software_version,
            fingerprint=g.fingerprint,
            started_at=g.started_at,
            clock_offset=g.clock_offset,
            backlog=session.backlog if session is not None and online else g.backlog,
            config_version=g.config_version,
            config_applied=g.config_applied,
            chargers_stale=not online,
        )

    # -- ChangeWatcher: a change is pushed to the site's box at once --
    def site_changed(self, uid: str) -> None:
        session = self._sessions.get(uid)
        if session is not None:
            session.wake.set()

    def charger_changed(self, site_uid: str, charger_id: str) -> None:
        self.site_changed(site_uid)

    # -- configuration snapshots --
    async def snapshot(self, site_uid: str) -> dict[str, Any]:
        """The site's whole configuration as the box needs it (password hashes, not
        passwords)."""
        site = await self._store.sites.get(site_uid)
        hashes = await self._store.gateways.password_hashes(site_uid)
        chargers = await self._store.chargers.of_site(site_uid)
        return {
            "site": {"uid": site.uid, **{k: getattr(site, k) for k in SiteSettings.model_fields}},
            "chargers": [
                {
                    "id": c.id,
                    "name": c.name,
                    "cpms_url": c.cpms_url,
                    "password_hash": hashes.get(c.id),
                }
                for c in chargers
            ],
            "load_management": await self._store.loadconfig.get(site_uid),
        }

    # -- the link --
    async def serve_link(self, gateway: Gateway, socket: LinkSocket) -> None:
        """Serve one box's link until it closes (the caller has accepted the WebSocket)."""
        site_uid = gateway.site_uid
        old = self._sessions.get(site_uid)
        if old is not None:
            with contextlib.suppress(Exception):
                await old.socket.close(1000, "replaced by a newer link of the same box")
        session = _Session(gateway, socket)
        self._sessions[site_uid] = session
        pusher: asyncio.Task[None] | None = None
        log.info("site=%s gateway %s link open", site_uid, gateway.id)
        try:
            hello = decode(await asyncio.wait_for(socket.receive_text(), self.hello_timeout))
            if hello.get("type") != "hello":
                raise ValueError("the first message must be hello")
            await self._hello(session, hello)
            current = await self._store.gateways.get(gateway.id)
            await session.send("welcome", acked=current.last_seq if current else 0, now=_now())
            pusher = asyncio.create_task(self._push_loop(session), name=f"gateway push {site_uid}")
            while True:
                message = decode(await socket.receive_text())
                session.last_contact = utcnow()
                await self._handle(session, message)
        except Exception as exc:  # the box went away (or broke the protocol): it reconnects
            log.info("site=%s gateway %s link closed: %s", site_uid, gateway.id, exc or type(exc))
        finally:
            if pusher is not None:
                pusher.cancel()
                await asyncio.gather(pusher, return_exceptions=True)
            if self._sessions.get(site_uid) is session:
                del self._sessions[site_uid]
            await self._store.gateways.set(
                gateway.id, last_contact=session.last_contact, backlog=session.backlog
            )

    async def _hello(self, session: _Session, hello: Mapping[str, Any]) -> None:
        now = utcnow()
        box_now = parse_time(hello.get("now"))
        fields: dict[str, Any] = {
            "last_contact": now,
            "software_version": str(hello.get("software_version") or "")[:64] or None,
            "fingerprint": str(hello.get("fingerprint") or "")[:128] or None,
            "started_at": parse_time(hello.get("started_at")),
            "clock_offset": (box_now - now).total_seconds() if box_now else None,
            "backlog": _int(hello.get("backlog")),
            "config_applied": _int(hello.get("config_version")),
        }
        session.backlog = fields["backlog"]
        session.sent_version = fields["config_applied"]
        await self._store.gateways.set(session.gateway.id, **fields)

    async def _handle(self, session: _Session, message: Mapping[str, Any]) -> None:
        kind = message["type"]
        if "backlog" in message:
            session.backlog = _int(message.get("backlog"))
        if kind == "events":
            acked = await self._apply_events(session.gateway, message.get("events") or [])
            await session.send("ack", seq=acked)
        elif kind == "applied":
            await self._store.gateways.set(
                session.gateway.id, config_applied=_int(message.get("version"))
            )
        elif kind == "status":
            await self._store.gateways.set(
                session.gateway.id, last_contact=session.last_contact, backlog=session.backlog
            )
        else:
            log.warning(
                "site=%s gateway sent an unknown message %r", session.gateway.site_uid, kind
            )

    async def _apply_events(self, gateway: Gateway, events: list[Any]) -> int:
        current = await self._store.gateways.get(gateway.id)
        last = current.last_seq if current else 0
        site_uid = gateway.site_uid
        marks: list[tuple[int, Attempt | None]] = []
        states: list[ChargerState] = []
        gone: set[str] = set()
        for event in sorted(events, key=lambda e: _int(e.get("seq"))):
            seq, kind, data = _int(event.get("seq")), event.get("kind"), event.get("data") or {}
            if seq <= last:
                continue  # applied before (its ack was lost): exactly once
            if kind == "attempt":
                marks.append((seq, _attempt(site_uid, data)))
            elif kind == "frame":
                self._frame(site_uid, data)
                marks.append((seq, None))
            elif kind == "loadsample":
                at = parse_time(data.get("at"))
                if at is not None:
                    series = self._load_series.setdefault(site_uid, deque(maxlen=720))
                    series.append(
                        {
                            "at": at,
                            "nodes": list(data.get("nodes") or ()),
                            "connectors": list(data.get("connectors") or ()),
                        }
                    )
                marks.append((seq, None))
            elif kind == "loadstatus":
                self._load_status[site_uid] = (dict(data), utcnow())
                marks.append((seq, None))
            elif kind == "chargergone":
                # deleted on the box (as the cloud asked): after any state sent before it
                cid = str(data.get("id"))
                states = [st for st in states if st.charger_id != cid]
                gone.add(cid)
                marks.append((seq, None))
            else:
                if kind == "charger":
                    states.append(_charger_state(site_uid, data))
                    gone.discard(states[-1].charger_id)
                marks.append((seq, None))
        if states:
            # Idempotent (a snapshot of each charger): written before the sequence moves on.
            await self._store.chargers.save_states(states)
            for state in states:
                self._announce(("changed", (site_uid, state.charger_id)))
        for cid in sorted(gone):
            with contextlib.suppress(NotFound):
                await self._store.chargers.delete(site_uid, cid)
            self._announce(("changed", (site_uid, cid)))
        if not marks:
            return last
        return await self._store.gateways.apply_attempts(gateway.id, marks)

    def _frame(self, site_uid: str, data: Mapping[str, Any]) -> None:
        sender, receiver = data.get("sender"), data.get("receiver")
        if sender not in _PARTIES or receiver not in _PARTIES:
            return
        key = (site_uid, str(data.get("charger_id")))
        ring = self._frames.get(key)
        if ring is None:
            ring = self._frames[key] = FrameRing()
        at = data.get("at")
        ring.append(
            float(at) if isinstance(at, int | float) else 0.0,
            sender,
            receiver,
            str(data.get("text") or ""),
        )
        self._announce(("frame", key))

    async def _push_loop(self, session: _Session) -> None:
        gateway_id, site_uid = session.gateway.id, session.gateway.site_uid
        while True:
            session.wake.clear()
            try:
                snapshot = await self.snapshot(site_uid)
            except NotFound:  # the site was deleted: its box has nothing left to serve
                await session.socket.close(REVOKED_CLOSE, "site deleted")
                return
            value = digest(snapshot)
            g = await self._store.gateways.get(gateway_id)
            if g is None or g.revoked_at is not None:
                await session.socket.close(REVOKED_CLOSE, "gateway revoked")
                return
            version = g.config_version
            if value != g.config_digest:
                version += 1
                await self._store.gateways.set(
                    gateway_id, config_version=version, config_digest=value
                )
            if version != session.sent_version:
                await session.send("config", version=version, snapshot=snapshot)
                session.sent_version = version
                log.info("site=%s configuration version %d sent to its gateway", site_uid, version)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.wake.wait(), self.poll_interval)


def _now() -> str:
    return utcnow().isoformat()


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        return 0


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _attempt(site_uid: str, data: Mapping[str, Any]) -> Attempt:
    return Attempt(
        at=parse_time(data.get("at")) or utcnow(),
        site_uid=site_uid,
        charge_point_id=str(data.get("charge_point_id") or ""),
        remote_addr=_text(data.get("remote_addr")),
        accepted=bool(data.get("accepted")),
        reason=_text(data.get("reason")),
        subprotocol=_text(data.get("subprotocol")),
        offered_subprotocols=tuple(str(p) for p in data.get("offered_subprotocols") or ()),
        http_status=data.get("http_status") if isinstance(data.get("http_status"), int) else None,
    )


def _charger_state(site_uid: str, data: Mapping[str, Any]) -> ChargerState:
    identity = data.get("identity") or {}
    connectors: dict[int, tuple[str, datetime]] = {}
    for c in data.get("connectors") or ():
        at = parse_time(c.get("updated_at"))
        if isinstance(c.get("id"), int) and c.get("status") is not None and at is not None:
            connectors[c["id"]] = (str(c["status"]), at)
    return ChargerState(
        site_uid=site_uid,
        charger_id=str(data.get("id")),
        ocpp_version=_text(data.get("ocpp_version")),
        connected=bool(data.get("connected")),
        upstream_connected=bool(data.get("upstream_connected")),
        last_seen=parse_time(data.get("last_seen")),
        identity=ChargerIdentity(
            **{k: _text(identity.get(k)) for k in ChargerIdentity.model_fields}
        ),
        connectors=connectors,
    )
