"""The offline journal: what chargers said while their CPMS link was down, kept durably and in
order until the CPMS has received it; and the 1.6 transaction id mappings made on replay."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from harmone.clock import utcnow
from harmone.store.db import Transactions
from harmone.store.models import JournalRow, TxMapRow

__all__ = ["JournalEntry", "JournalRepo"]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    id: int
    action: str
    frame: str
    local_tx_id: int | None
    status_key: str | None


class JournalRepo:
    def __init__(self, store: Transactions) -> None:
        self._store = store

    def _tx(self, write: bool = False) -> AbstractAsyncContextManager[AsyncSession]:
        return self._store.transaction(write=write)

    async def append(
        self,
        site_uid: str,
        charger_id: str,
        action: str,
        frame: str,
        local_tx_id: int | None = None,
        status_key: str | None = None,
    ) -> tuple[JournalEntry, list[int]]:
        """Store one entry (committed when this returns). A StatusNotification replaces the
        earlier unsent ones of the same connector: only the latest state matters to the CPMS.
        Returns the entry and the ids of the entries it replaced."""
        async with self._tx(write=True) as s:
            replaced: list[int] = []
            if status_key is not None:
                replaced = list(
                    (
                        await s.scalars(
                            select(JournalRow.id).where(
                                JournalRow.site_uid == site_uid,
                                JournalRow.charger_id == charger_id,
                                JournalRow.status_key == status_key,
                            )
                        )
                    ).all()
                )
                if replaced:
                    await s.execute(delete(JournalRow).where(JournalRow.id.in_(replaced)))
            row = JournalRow(
                site_uid=site_uid,
                charger_id=charger_id,
                action=action,
                frame=frame,
                local_tx_id=local_tx_id,
                status_key=status_key,
                created_at=utcnow(),
            )
            s.add(row)
            await s.flush()
            return JournalEntry(row.id, action, frame, local_tx_id, status_key), replaced

    async def pending(self, site_uid: str, charger_id: str) -> list[JournalEntry]:
        async with self._tx() as s:
            rows = (
                await s.scalars(
                    select(JournalRow)
                    .where(
                        JournalRow.site_uid == site_uid,
                        JournalRow.charger_id == charger_id,
                    )
                    .order_by(JournalRow.id)
                )
            ).all()
        return [JournalEntry(r.id, r.action, r.frame, r.local_tx_id, r.status_key) for r in rows]

    async def backlog(
        self, site_uid: str, charger_id: str
    ) -> tuple[list[JournalEntry], dict[int, int]]:
        """`pending` and `tx_maps` together, in one transaction (one per handshake)."""
        async with self._tx() as s:
            rows = (
                await s.scalars(
                    select(JournalRow)
                    .where(JournalRow.site_uid == site_uid, JournalRow.charger_id == charger_id)
                    .order_by(JournalRow.id)
                )
            ).all()
            maps = (
                await s.scalars(
                    select(TxMapRow).where(
                        TxMapRow.site_uid == site_uid, TxMapRow.charger_id == charger_id
                    )
                )
            ).all()
        entries = [JournalEntry(r.id, r.action, r.frame, r.local_tx_id, r.status_key) for r in rows]
        return entries, {m.local_id: m.cpms_id for m in maps}

    async def chargers_with_backlog(self) -> set[tuple[str, str]]:
        """(site, charger) of every charger with journal entries or transaction id mappings:
        the others need no look-up when they connect."""
        async with self._tx() as s:
            journal = await s.execute(select(JournalRow.site_uid, JournalRow.charger_id).distinct())
            maps = await s.execute(select(TxMapRow.site_uid, TxMapRow.charger_id).distinct())
            return {(a, b) for a, b in journal} | {(a, b) for a, b in maps}

    async def delivered(
        self,
        site_uid: str,
        charger_id: str,
        entry_id: int,
        tx_map: tuple[int, int] | None = None,
    ) -> None:
        """The CPMS answered the replayed entry: drop it (and record a new id mapping) in one
        transaction, so that a crash never loses the mapping of a delivered start."""
        async with self._tx(write=True) as s:
            if tx_map is not None:
                await s.merge(
                    TxMapRow(
                        site_uid=site_uid,
                        charger_id=charger_id,
                        local_id=tx_map[0],
                        cpms_id=tx_map[1],
                        created_at=utcnow(),
                    )
                )
            await s.execute(delete(JournalRow).where(JournalRow.id == entry_id))

    async def tx_maps(self, site_uid: str, charger_id: str) -> dict[int, int]:
        async with self._tx() as s:
            rows = (
                await s.scalars(
                    select(TxMapRow).where(
                        TxMapRow.site_uid == site_uid, TxMapRow.charger_id == charger_id
                    )
                )
            ).all()
        return {r.local_id: r.cpms_id for r in rows}

    async def end_tx_map(self, site_uid: str, charger_id: str, local_id: int) -> None:
        async with self._tx(write=True) as s:
            await s.execute(
                delete(TxMapRow).where(
                    TxMapRow.site_uid == site_uid,
                    TxMapRow.charger_id == charger_id,
                    TxMapRow.local_id == local_id,
                )
            )

    async def count(self, site_uid: str) -> dict[str, int]:
        """Unsent entries per charger of a site (for the API)."""
        async with self._tx() as s:
            rows = (
                await s.execute(
                    select(JournalRow.charger_id, func.count())
                    .where(JournalRow.site_uid == site_uid)
                    .group_by(JournalRow.charger_id)
                )
            ).all()
        return {str(cid): int(n) for cid, n in rows}

    async def count_by_site(self) -> dict[str, int]:
        """Unsent entries per site (for the metrics); sites without any are left out."""
        async with self._tx() as s:
            rows = (
                await s.execute(
                    select(JournalRow.site_uid, func.count()).group_by(JournalRow.site_uid)
                )
            ).all()
        return {str(uid): int(n) for uid, n in rows}
