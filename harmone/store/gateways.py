"""Cloud side of gateway sites (issue 12): pairing codes, paired boxes and what they report.

Secrets are stored as SHA-256 digests only (codes and credentials are 128+ random bits, so a
fast hash is enough: there is nothing to brute-force). Events a box sends up are applied with
their outbox sequence number: `apply_attempts` skips numbers at or below the box's `last_seq`
and moves it forward in the same transaction, so a resent batch is applied exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, update

from harmone.clock import utcnow
from harmone.store.db import Database
from harmone.store.models import AttemptRow, ChargerRow, GatewayRow, PairingCodeRow
from harmone.store.records import Attempt
from harmone.store.rows import record, values

__all__ = ["Gateway", "GatewayRepo"]

_ATTEMPTS = cast(Table, AttemptRow.__table__)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Gateway:
    """A paired box as the cloud knows it."""

    id: str
    site_uid: str
    secret_hash: str
    created_at: datetime
    revoked_at: datetime | None
    last_contact: datetime | None
    software_version: str | None
    fingerprint: str | None
    started_at: datetime | None
    clock_offset: float | None
    backlog: int
    config_version: int
    config_digest: str | None
    config_applied: int
    last_seq: int


class GatewayRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_pairing_code(self, site_uid: str, code_hash: str, expires_at: datetime) -> None:
        async with self._db.transaction(write=True) as session:
            session.add(
                PairingCodeRow(code_hash=code_hash, site_uid=site_uid, expires_at=expires_at)
            )

    async def redeem(
        self, code_hash: str, gateway_id: str, secret_hash: str, now: datetime
    ) -> Gateway | None:
        """Use a pairing code once: a new gateway for its site (any earlier box of the site is
        revoked: one box per site). None when the code is unknown, used or expired."""
        async with self._db.transaction(write=True) as session:
            code = await session.get(PairingCodeRow, code_hash)
            if code is None or code.used_at is not None or code.expires_at <= now:
                return None
            code.used_at = now
            await session.execute(
                update(GatewayRow)
                .where(GatewayRow.site_uid == code.site_uid, GatewayRow.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            row = GatewayRow(
                id=gateway_id,
                site_uid=code.site_uid,
                secret_hash=secret_hash,
                created_at=now,
                backlog=0,
                config_version=0,
                config_applied=0,
                last_seq=0,
            )
            session.add(row)
            await session.flush()
            return record(Gateway, row)

    async def get(self, gateway_id: str) -> Gateway | None:
        async with self._db.transaction() as session:
            row = await session.get(GatewayRow, gateway_id)
            return record(Gateway, row) if row else None

    async def of_site(self, site_uid: str) -> Gateway | None:
        """The site's newest box (revoked or not), or None if it was never paired."""
        async with self._db.transaction() as session:
            row = await session.scalar(
                select(GatewayRow)
                .where(GatewayRow.site_uid == site_uid)
                .order_by(GatewayRow.created_at.desc(), GatewayRow.id)
                .limit(1)
            )
            return record(Gateway, row) if row else None

    async def revoke_site(self, site_uid: str, now: datetime) -> list[str]:
        """Revoke every active box of the site; their ids."""
        async with self._db.transaction(write=True) as session:
            ids = list(
                await session.scalars(
                    select(GatewayRow.id).where(
                        GatewayRow.site_uid == site_uid, GatewayRow.revoked_at.is_(None)
                    )
                )
            )
            if ids:
                await session.execute(
                    update(GatewayRow).where(GatewayRow.id.in_(ids)).values(revoked_at=now)
                )
        return ids

    async def set(self, gateway_id: str, **fields: Any) -> None:
        """Record what a box reported (status fields, config versions)."""
        async with self._db.transaction(write=True) as session:
            await session.execute(
                update(GatewayRow).where(GatewayRow.id == gateway_id).values(**fields)
            )

    async def apply_attempts(
        self, gateway_id: str, attempts: Sequence[tuple[int, Attempt | None]]
    ) -> int:
        """Insert the attempts whose sequence number is above the box's `last_seq` and move it
        to the highest number given (None: an event with nothing to insert here); one
        transaction. Returns the new `last_seq`."""
        async with self._db.transaction(write=True) as session:
            row = await session.get(GatewayRow, gateway_id)
            if row is None:
                return 0
            last = row.last_seq
            fresh = [(seq, a) for seq, a in attempts if seq > last]
            rows = [
                values(a, offered_subprotocols=",".join(a.offered_subprotocols))
                for _, a in fresh
                if a is not None
            ]
            if rows:
                await session.execute(_ATTEMPTS.insert(), rows)
            if fresh:
                row.last_seq = max(seq for seq, _ in fresh)
            return row.last_seq

    async def password_hashes(self, site_uid: str) -> dict[str, str | None]:
        """The argon2id hashes of the site's chargers' passwords (for the box's copy)."""
        async with self._db.transaction() as session:
            rows = await session.execute(
                select(ChargerRow.id, ChargerRow.password_hash).where(
                    ChargerRow.site_uid == site_uid
                )
            )
            return {str(cid): h for cid, h in rows}

    @staticmethod
    def now() -> datetime:
        return utcnow()
