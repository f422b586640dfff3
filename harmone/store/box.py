"""Box side of a gateway site (issue 12): the box's identity in its cloud, the configuration
it runs on (cached, so that it starts without the WAN), and its outbox.

The outbox is a table with sequence numbers (AUTOINCREMENT: never reused). Events are put in
by `enqueue_attempts` / `enqueue_charger_states`, each in one transaction with the cursor that
says what was already put in, so nothing is enqueued twice or skipped across a restart. Rows
stay until the cloud acknowledges their number (`ack`). Bounded: past `max_rows` the oldest
droppable rows go (inspector frames first, see docs/gateway.md); a charger state supersedes
that charger's older unsent state; connection-log entries are never dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select

from harmone.domain import SiteSettings, settings
from harmone.store.db import Database
from harmone.store.models import (
    AttemptRow,
    BoxIdentityRow,
    BoxOutboxRow,
    BoxSentRow,
    ChargerRow,
    SiteRow,
)
from harmone.store.rows import record

__all__ = ["DROPPABLE_KINDS", "BoxIdentity", "BoxRepo", "OutboxEvent"]

log = logging.getLogger(__name__)

#: Kinds the outbox may drop when full, in the order they go (never "attempt").
DROPPABLE_KINDS = ("frame", "loadsample")


@dataclass(frozen=True, slots=True)
class BoxIdentity:
    cloud_url: str
    gateway_id: str
    credential: str
    site_uid: str
    config_version: int
    config: str | None
    acked_seq: int
    attempt_cursor: int
    revoked: bool
    paired_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    seq: int
    kind: str
    body: str

    def wire(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "data": json.loads(self.body)}


def _jsonable(value: object) -> object:
    iso = getattr(value, "isoformat", None)
    return iso() if callable(iso) else str(value)


class BoxRepo:
    def __init__(self, db: Database, max_rows: int = 100_000) -> None:
        self._db = db
        self.max_rows = max_rows

    # -- identity and configuration --
    async def identity(self) -> BoxIdentity | None:
        async with self._db.transaction() as session:
            row = await session.get(BoxIdentityRow, 1)
            return record(BoxIdentity, row) if row else None

    async def pair(
        self, cloud_url: str, gateway_id: str, credential: str, site_uid: str, paired_at: datetime
    ) -> None:
        """Become the box `gateway_id` of `site_uid` (a new pairing starts a new outbox)."""
        async with self._db.transaction(write=True) as session:
            await session.execute(delete(BoxIdentityRow))
            await session.execute(delete(BoxOutboxRow))
            await session.execute(delete(BoxSentRow))
            cursor = await session.scalar(select(func.max(AttemptRow.id))) or 0
            session.add(
                BoxIdentityRow(
                    id=1,
                    cloud_url=cloud_url,
                    gateway_id=gateway_id,
                    credential=credential,
                    site_uid=site_uid,
                    config_version=0,
                    config=None,
                    acked_seq=0,
                    # The log of an earlier pairing (another site) is not this site's news.
                    attempt_cursor=cursor,
                    revoked=False,
                    paired_at=paired_at,
                )
            )

    async def save_config(self, version: int, config: Mapping[str, Any]) -> None:
        async with self._db.transaction(write=True) as session:
            row = await session.get(BoxIdentityRow, 1)
            if row is not None:
                row.config_version = version
                row.config = json.dumps(config, sort_keys=True)

    async def set_revoked(self) -> None:
        async with self._db.transaction(write=True) as session:
            row = await session.get(BoxIdentityRow, 1)
            if row is not None:
                row.revoked = True

    async def adopt_site(self, uid: str, fields: Mapping[str, Any]) -> None:
        """Create the site `uid` as the cloud has it (the box's copy keeps the cloud's UID)."""
        checked = settings(SiteSettings, dict(fields), "site")
        async with self._db.transaction(write=True) as session:
            session.add(SiteRow(uid=uid, **checked.model_dump()))

    async def password_hashes(self, site_uid: str) -> dict[str, str | None]:
        async with self._db.transaction() as session:
            rows = await session.execute(
                select(ChargerRow.id, ChargerRow.password_hash).where(
                    ChargerRow.site_uid == site_uid
                )
            )
            return {str(cid): h for cid, h in rows}

    async def set_password_hash(self, site_uid: str, charger_id: str, value: str | None) -> None:
        """The charger's password hash as the cloud holds it (the box never sees passwords)."""
        async with self._db.transaction(write=True) as session:
            row = await session.get(ChargerRow, (site_uid, charger_id))
            if row is not None:
                row.password_hash = value

    # -- the outbox --
    async def enqueue_attempts(self, site_uid: str, limit: int = 500) -> int:
        """Put the site's connection attempts logged since the last call in the outbox."""
        async with self._db.transaction(write=True) as session:
            ident = await session.get(BoxIdentityRow, 1)
            if ident is None:
                return 0
            rows = list(
                await session.scalars(
                    select(AttemptRow)
                    .where(AttemptRow.id > ident.attempt_cursor)
                    .order_by(AttemptRow.id)
                    .limit(limit)
                )
            )
            if not rows:
                return 0
            ident.attempt_cursor = rows[-1].id
            added = 0
            for a in rows:
                if a.site_uid != site_uid:
                    continue
                body = {
                    "at": a.at.isoformat(),
                    "charge_point_id": a.charge_point_id,
                    "remote_addr": a.remote_addr,
                    "accepted": a.accepted,
                    "reason": a.reason,
                    "subprotocol": a.subprotocol,
                    "offered_subprotocols": [p for p in a.offered_subprotocols.split(",") if p],
                    "http_status": a.http_status,
                }
                session.add(BoxOutboxRow(kind="attempt", key=None, body=json.dumps(body)))
                added += 1
            await self._bound(session)
            return added

    async def enqueue_charger_states(
        self, site_uid: str, states: Mapping[str, tuple[str, Mapping[str, Any]]]
    ) -> int:
        """Put each charger state (id -> (digest, body)) whose digest differs from the last
        one enqueued in the outbox, replacing that charger's unsent older state."""
        async with self._db.transaction(write=True) as session:
            sent = {
                r.charger_id: r
                for r in await session.scalars(
                    select(BoxSentRow).where(BoxSentRow.site_uid == site_uid)
                )
            }
            added = 0
            for charger_id, (digest, body) in states.items():
                row = sent.get(charger_id)
                if row is not None and row.digest == digest:
                    continue
                key = f"{site_uid}/{charger_id}"
                await session.execute(
                    delete(BoxOutboxRow).where(
                        BoxOutboxRow.kind == "charger", BoxOutboxRow.key == key
                    )
                )
                session.add(BoxOutboxRow(kind="charger", key=key, body=json.dumps(body)))
                if row is None:
                    session.add(BoxSentRow(site_uid=site_uid, charger_id=charger_id, digest=digest))
                else:
                    row.digest = digest
                added += 1
            if added:
                await self._bound(session)
            return added

    async def enqueue_charger_gone(self, site_uid: str, charger_id: str) -> None:
        """A charger deleted on the box: its unsent state is dropped and the cloud told, after
        whatever was enqueued before (so that no earlier state adds it back there)."""
        key = f"{site_uid}/{charger_id}"
        async with self._db.transaction(write=True) as session:
            await session.execute(
                delete(BoxOutboxRow).where(BoxOutboxRow.kind == "charger", BoxOutboxRow.key == key)
            )
            await session.execute(
                delete(BoxSentRow).where(
                    BoxSentRow.site_uid == site_uid, BoxSentRow.charger_id == charger_id
                )
            )
            body = json.dumps({"id": charger_id})
            session.add(BoxOutboxRow(kind="chargergone", key=key, body=body))

    async def enqueue_latest(self, kind: str, key: str, body: Mapping[str, Any]) -> None:
        """Put `body` in the outbox, replacing an unsent older event of the same kind and
        key (a snapshot: only the latest matters)."""
        async with self._db.transaction(write=True) as session:
            await session.execute(
                delete(BoxOutboxRow).where(BoxOutboxRow.kind == kind, BoxOutboxRow.key == key)
            )
            session.add(BoxOutboxRow(kind=kind, key=key, body=json.dumps(body, default=_jsonable)))

    async def enqueue_frames(self, frames: Sequence[Mapping[str, Any]], kind: str = "frame") -> int:
        """Put inspector frames (or load-management samples, `kind` "loadsample") in the
        outbox: the first to go when it is full."""
        if not frames:
            return 0
        async with self._db.transaction(write=True) as session:
            for body in frames:
                session.add(
                    BoxOutboxRow(kind=kind, key=None, body=json.dumps(body, default=_jsonable))
                )
            await self._bound(session)
        return len(frames)

    async def forget_sent(self) -> None:
        """Make the next `enqueue_charger_states` send every charger (a fresh link resyncs)."""
        async with self._db.transaction(write=True) as session:
            await session.execute(delete(BoxSentRow))

    async def _bound(self, session: Any) -> None:
        count = await session.scalar(select(func.count()).select_from(BoxOutboxRow)) or 0
        excess = count - self.max_rows
        for kind in DROPPABLE_KINDS:
            if excess <= 0:
                return
            oldest = select(BoxOutboxRow.seq).where(BoxOutboxRow.kind == kind)
            seqs = list(await session.scalars(oldest.order_by(BoxOutboxRow.seq).limit(excess)))
            if seqs:
                await session.execute(delete(BoxOutboxRow).where(BoxOutboxRow.seq.in_(seqs)))
                log.warning("gateway outbox full: dropped %d %s event(s)", len(seqs), kind)
                excess -= len(seqs)
        if excess > 0:
            # Only what must never be dropped is left: keep it, past the bound.
            log.warning(
                "gateway outbox over its bound by %d event(s) that are never dropped "
                "(connection log, states): the cloud has been unreachable for long",
                excess,
            )

    async def pending(self, after: int, limit: int = 200) -> list[OutboxEvent]:
        """Unacknowledged events after sequence `after`, oldest first."""
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(BoxOutboxRow)
                .where(BoxOutboxRow.seq > after)
                .order_by(BoxOutboxRow.seq)
                .limit(limit)
            )
            return [OutboxEvent(r.seq, r.kind, r.body) for r in rows]

    async def ack(self, seq: int) -> None:
        """The cloud has applied everything up to `seq`: those rows go."""
        async with self._db.transaction(write=True) as session:
            await session.execute(delete(BoxOutboxRow).where(BoxOutboxRow.seq <= seq))
            row = await session.get(BoxIdentityRow, 1)
            if row is not None and seq > row.acked_seq:
                row.acked_seq = seq

    async def backlog(self) -> int:
        async with self._db.transaction() as session:
            return int(await session.scalar(select(func.count()).select_from(BoxOutboxRow)) or 0)
