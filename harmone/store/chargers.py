"""Chargers: their settings, their HTTP Basic passwords and the live state the relay persists.

Settings are validated by `harmone.domain.ChargerSettings`; records are `harmone.domain.Charger`
with the boot identity composed in (`ChargerIdentity`), mapped from the row by field name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Row, Table, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from harmone.clock import utcnow
from harmone.domain import (
    Charger,
    ChargerIdentity,
    ChargerSettings,
    Connector,
    changed,
    check_charger_id,
)
from harmone.errors import ConfigError, NotFound, StoreError
from harmone.security import (
    charger_password_problem,
    hash_password,
    password_needs_rehash,
    verify_password,
)
from harmone.store.db import Database
from harmone.store.models import ChargerRow, ConnectorRow, SiteRow
from harmone.store.records import ChargerState, PasswordCheck
from harmone.store.rows import record

__all__ = ["ChargerRepo"]

log = logging.getLogger(__name__)

# Core tables, for the bulk statements that bypass the ORM unit of work.
#: Records made per slice when a whole site's chargers are read (`of_site`).
_SLICE = 250
_CHARGERS = cast(Table, ChargerRow.__table__)
_CONNECTORS = cast(Table, ConnectorRow.__table__)
#: The columns a ChargerState sets directly (its identity's fields are added one by one).
_STATE_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(ChargerState)
    if f.name not in ("site_uid", "charger_id", "identity", "connectors")
)


def _charger(row: ChargerRow | Row[Any], connectors: tuple[Connector, ...] = ()) -> Charger:
    return record(
        Charger,
        row,
        identity=record(ChargerIdentity, row),
        connectors=connectors,
        password_set=row.password_hash is not None,
    )


def _connector(row: ConnectorRow | Row[Any]) -> Connector:
    return Connector(id=row.connector_id, status=row.status, updated_at=row.updated_at)


_IDENTITY_FIELDS = tuple(ChargerIdentity.model_fields)


def _state_values(state: ChargerState) -> dict[str, Any]:
    """The columns `state` changes: its fields that are not None (those of its identity too).

    Plain loops over precomputed names: this runs for every state the relay persists.
    """
    values: dict[str, Any] = {}
    for source, names in ((state, _STATE_FIELDS), (state.identity, _IDENTITY_FIELDS)):
        if source is None:
            continue
        for name in names:
            value = getattr(source, name)
            if value is not None:
                values[name] = value
    return values


async def _connectors(
    session: AsyncSession, site_uid: str, charger_id: str
) -> tuple[Connector, ...]:
    rows = await session.scalars(
        select(ConnectorRow)
        .where(ConnectorRow.site_uid == site_uid, ConnectorRow.charger_id == charger_id)
        .order_by(ConnectorRow.connector_id)
    )
    return tuple(_connector(row) for row in rows)


class ChargerRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def find(self, site_uid: str, charger_id: str) -> Charger | None:
        """The charger `charger_id` of site `site_uid` with its connectors, or None."""
        async with self._db.transaction() as session:
            row = await session.get(ChargerRow, (site_uid, charger_id))
            if row is None:
                return None
            return _charger(row, await _connectors(session, site_uid, charger_id))

    async def get(self, site_uid: str, charger_id: str) -> Charger:
        """Like `find_charger`, but NotFound instead of None."""
        charger = await self.find(site_uid, charger_id)
        if charger is None:
            raise NotFound(f"no charger {charger_id!r} on site {site_uid!r}")
        return charger

    async def of_site(self, site_uid: str) -> list[Charger]:
        """The chargers of a site (ordered by id) with their connectors; NotFound for an
        unknown site. Two queries, whatever the number of chargers."""
        async with self._db.transaction() as session:
            # plain rows, not ORM objects: a site may have thousands, read for display only
            chargers = list(
                await session.execute(
                    select(_CHARGERS)
                    .where(_CHARGERS.c.site_uid == site_uid)
                    .order_by(_CHARGERS.c.id)
                )
            )
            if not chargers:
                if await session.get(SiteRow, site_uid) is None:
                    raise NotFound(f"no site {site_uid!r}")
                return []
            connectors = await session.execute(
                select(_CONNECTORS)
                .where(_CONNECTORS.c.site_uid == site_uid)
                .order_by(_CONNECTORS.c.charger_id, _CONNECTORS.c.connector_id)
            )
            by_charger: dict[str, list[Connector]] = defaultdict(list)
            for conn in connectors:
                by_charger[conn.charger_id].append(_connector(conn))
        # Made into records a slice at a time, the event loop free in between: a site of
        # thousands of chargers must not hold the relay and every other request meanwhile.
        out: list[Charger] = []
        for start in range(0, len(chargers), _SLICE):
            if start:
                await asyncio.sleep(0)
            out += [
                _charger(row, tuple(by_charger.get(row.id, ())))
                for row in chargers[start : start + _SLICE]
            ]
        return out

    async def counts(self) -> dict[str, int]:
        """The number of chargers of every site that has any, in one query."""
        async with self._db.transaction() as session:
            rows = await session.execute(
                select(ChargerRow.site_uid, func.count()).group_by(ChargerRow.site_uid)
            )
            return {site_uid: int(count) for site_uid, count in rows}

    async def register(self, site_uid: str, charger_id: str) -> Charger:
        """The charger, added to its site if new; idempotent and safe to call concurrently.

        NotFound if the site does not exist.
        """
        charger_id = check_charger_id(charger_id)
        now = utcnow()
        stmt = (
            self._db.insert(_CHARGERS)
            .values(
                site_uid=site_uid,
                id=charger_id,
                connected=False,
                upstream_connected=False,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["site_uid", "id"])
        )
        # ON CONFLICT DO NOTHING: of concurrent registrations exactly one inserts and none
        # fails, without a lost race turning into an IntegrityError.
        charger = await self._upsert(stmt, site_uid, charger_id)
        if charger.created_at == now:
            log.info("site=%s charger=%s registered", site_uid, charger_id)
        return charger

    async def _upsert(self, stmt: Any, site_uid: str, charger_id: str) -> Charger:
        """Run an INSERT … ON CONFLICT on the chargers table and read the charger back."""
        async with self._db.transaction(write=True) as session:
            try:
                await session.execute(stmt)
            except IntegrityError as exc:  # only the foreign key can fail here
                raise NotFound(f"no site {site_uid!r}") from exc
            row = await session.get(ChargerRow, (site_uid, charger_id))
            if row is None:  # pragma: no cover - the row exists inside this transaction
                raise StoreError(f"charger {charger_id!r} vanished while writing it")
            return _charger(row, await _connectors(session, site_uid, charger_id))

    async def update(self, site_uid: str, charger_id: str, /, **fields: object) -> Charger:
        """Change any writable field (`ChargerSettings`: its name, its own CPMS); NotFound,
        ConfigError."""
        async with self._db.transaction(write=True) as session:
            row = await session.get(ChargerRow, (site_uid, charger_id))
            if row is None:
                raise NotFound(f"no charger {charger_id!r} on site {site_uid!r}")
            current = record(ChargerSettings, row)
            after = changed(current, fields, "charger") if fields else current
            for name in fields:
                setattr(row, name, getattr(after, name))
            await session.flush()
            charger = _charger(row, await _connectors(session, site_uid, charger_id))
        if fields:
            log.info(
                "site=%s charger=%s updated: %s", site_uid, charger_id, ", ".join(sorted(fields))
            )
        return charger

    # -- charger passwords (HTTP Basic, OCPP security profiles 1 and 2) ---------------------

    async def set_password(self, site_uid: str, charger_id: str, password: str) -> Charger:
        """Set or replace a charger's HTTP Basic password; only its argon2id hash is stored.

        A charger that has not connected yet is registered, so that its password can be set
        before it is installed. NotFound for an unknown site, ConfigError for a password
        OCPP does not allow (16 to 40 printable ASCII characters).
        """
        charger_id = check_charger_id(charger_id)
        problem = charger_password_problem(password)
        if problem:
            raise ConfigError(problem)
        password_hash = await asyncio.to_thread(hash_password, password)
        now = utcnow()
        insert = self._db.insert(_CHARGERS).values(
            site_uid=site_uid,
            id=charger_id,
            connected=False,
            upstream_connected=False,
            created_at=now,
            password_hash=password_hash,
        )
        stmt = insert.on_conflict_do_update(
            index_elements=["site_uid", "id"], set_={"password_hash": password_hash}
        )
        charger = await self._upsert(stmt, site_uid, charger_id)
        registered = " (registered)" if charger.created_at == now else ""
        log.info("site=%s charger=%s password set%s", site_uid, charger_id, registered)
        return charger

    async def clear_password(self, site_uid: str, charger_id: str) -> Charger:
        """Forget a charger's password (on a site with charger_auth it can then no longer
        connect); NotFound for an unknown charger."""
        async with self._db.transaction(write=True) as session:
            row = await session.get(ChargerRow, (site_uid, charger_id))
            if row is None:
                raise NotFound(f"no charger {charger_id!r} on site {site_uid!r}")
            row.password_hash = None
            await session.flush()
            charger = _charger(row, await _connectors(session, site_uid, charger_id))
        log.info("site=%s charger=%s password removed", site_uid, charger_id)
        return charger

    async def delete(self, site_uid: str, charger_id: str) -> None:
        """Forget a charger and its connectors (its connection attempts stay); NotFound."""
        async with self._db.transaction(write=True) as session:
            row = await session.get(ChargerRow, (site_uid, charger_id))
            if row is None:
                raise NotFound(f"no charger {charger_id!r} on site {site_uid!r}")
            await session.execute(
                delete(ConnectorRow).where(
                    ConnectorRow.site_uid == site_uid, ConnectorRow.charger_id == charger_id
                )
            )
            await session.delete(row)
        log.info("site=%s charger=%s deleted", site_uid, charger_id)

    async def verify_password(self, site_uid: str, charger_id: str, password: str) -> PasswordCheck:
        """Whether `password` is this charger's: "ok", "wrong", or "not_set" (no such charger,
        or no password for it).

        argon2 runs in a thread so that the event loop keeps relaying frames meanwhile.
        """
        async with self._db.transaction() as session:
            password_hash = await session.scalar(
                select(ChargerRow.password_hash).where(
                    ChargerRow.site_uid == site_uid, ChargerRow.id == charger_id
                )
            )
        if password_hash is None:
            # No dummy verification here: it would hand anyone who invents identities a way
            # to make HARMON-E burn argon2 time, and identities are not secret anyway.
            return "not_set"
        if not await asyncio.to_thread(verify_password, password_hash, password):
            return "wrong"
        if password_needs_rehash(password_hash):
            new_hash = await asyncio.to_thread(hash_password, password)
            async with self._db.transaction(write=True) as session:
                # Only if unchanged meanwhile: a password set in between must win.
                await session.execute(
                    update(ChargerRow)
                    .where(
                        ChargerRow.site_uid == site_uid,
                        ChargerRow.id == charger_id,
                        ChargerRow.password_hash == password_hash,
                    )
                    .values(password_hash=new_hash)
                )
        return "ok"

    async def save_states(self, states: Sequence[ChargerState]) -> None:
        """Persist what the relay learned, in one transaction for the whole batch.

        None fields are left unchanged; later states in the batch win over earlier ones for
        the same charger; unknown chargers are registered; connectors are upserted. States of
        sites that no longer exist are dropped (the site was deleted while it was connected).
        """
        if not states:
            return
        fields: dict[tuple[str, str], dict[str, Any]] = {}
        connectors: dict[tuple[str, str], dict[int, tuple[str, Any]]] = {}
        for state in states:
            key = (state.site_uid, state.charger_id)
            fields.setdefault(key, {}).update(_state_values(state))
            connectors.setdefault(key, {}).update(state.connectors)

        chargers_t = _CHARGERS
        connectors_t = _CONNECTORS
        async with self._db.transaction(write=True) as session:
            site_uids = {site_uid for site_uid, _ in fields}
            known = set(
                await session.scalars(select(SiteRow.uid).where(SiteRow.uid.in_(site_uids)))
            )
            for site_uid, charger_id in fields:
                if site_uid not in known:
                    log.warning(
                        "site=%s charger=%s state dropped: no such site", site_uid, charger_id
                    )
            keys = [key for key in fields if key[0] in known]
            if not keys:
                return
            conn = await session.connection()
            now = utcnow()
            await conn.execute(
                self._db.insert(chargers_t).on_conflict_do_nothing(
                    index_elements=["site_uid", "id"]
                ),
                [
                    {
                        "site_uid": site_uid,
                        "id": charger_id,
                        "connected": False,
                        "upstream_connected": False,
                        "created_at": now,
                    }
                    for site_uid, charger_id in keys
                ],
            )
            # One executemany per distinct set of changed columns: SET lists must match.
            groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
            for key in keys:
                if fields[key]:
                    names = tuple(sorted(fields[key]))
                    groups[names].append({"k_site": key[0], "k_id": key[1], **fields[key]})
            for rows in groups.values():
                await conn.execute(
                    update(chargers_t).where(
                        and_(
                            chargers_t.c.site_uid == bindparam("k_site"),
                            chargers_t.c.id == bindparam("k_id"),
                        )
                    ),
                    rows,
                )
            connector_rows = [
                {
                    "site_uid": key[0],
                    "charger_id": key[1],
                    "connector_id": connector_id,
                    "status": status,
                    "updated_at": at,
                }
                for key in keys
                for connector_id, (status, at) in sorted(connectors[key].items())
            ]
            if connector_rows:
                upsert = self._db.insert(connectors_t)
                await conn.execute(
                    upsert.on_conflict_do_update(
                        index_elements=["site_uid", "charger_id", "connector_id"],
                        set_={
                            "status": upsert.excluded.status,
                            "updated_at": upsert.excluded.updated_at,
                        },
                    ),
                    connector_rows,
                )

    async def mark_all_disconnected(self) -> None:
        """Set connected and upstream_connected to False everywhere (at server start, no
        connection from a previous run can still be open)."""
        async with self._db.transaction(write=True) as session:
            await session.execute(
                update(ChargerRow)
                .where(or_(ChargerRow.connected, ChargerRow.upstream_connected))
                .values(connected=False, upstream_connected=False)
            )
