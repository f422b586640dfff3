"""Console sessions and API tokens, stored as hashes only.

Ids, secrets, lifetimes and how often a use is recorded are decided by
`harmone.services.accounts`; this repository stores and finds what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from harmone.errors import NotFound
from harmone.store.db import Database
from harmone.store.models import ApiTokenRow, ConsoleSessionRow, UserRow
from harmone.store.records import User
from harmone.store.rows import record
from harmone.store.users import site_scope

__all__ = ["SessionRepo", "StoredSession", "StoredToken"]


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A console session as stored, with its user's account."""

    user: User
    sites: frozenset[str] | None
    last_seen_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class StoredToken:
    """An API token as stored: its row id, public id, secret hash, last use, and user."""

    pk: int
    token_id: str
    secret_hash: str
    last_used_at: datetime | None
    user: User


class SessionRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- console sessions --

    async def create(self, user_id: int, id_hash: str, now: datetime, expires_at: datetime) -> None:
        """Store a session for `user_id`, sweeping every expired one at the same time;
        NotFound for no such user."""
        async with self._db.transaction(write=True) as session:
            await session.execute(
                delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at <= now)
            )
            session.add(
                ConsoleSessionRow(
                    id_hash=id_hash,
                    user_id=user_id,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires_at,
                )
            )
            try:
                await session.flush()
            except IntegrityError as exc:
                raise NotFound(f"no user with id {user_id}") from exc

    async def find(self, id_hash: str) -> StoredSession | None:
        async with self._db.transaction() as session:
            found = (
                await session.execute(
                    select(ConsoleSessionRow, UserRow)
                    .join(UserRow, UserRow.id == ConsoleSessionRow.user_id)
                    .where(ConsoleSessionRow.id_hash == id_hash)
                )
            ).one_or_none()
            if found is None:
                return None
            row, user = found
            return StoredSession(
                record(User, user),
                await site_scope(session, user),
                row.last_seen_at,
                row.expires_at,
            )

    async def touch(self, id_hash: str, now: datetime) -> None:
        async with self._db.transaction(write=True) as session:
            await session.execute(
                update(ConsoleSessionRow)
                .where(ConsoleSessionRow.id_hash == id_hash)
                .values(last_seen_at=now)
            )

    async def delete(self, id_hash: str) -> None:
        """End a session; unknown ones are ignored."""
        async with self._db.transaction(write=True) as session:
            await session.execute(
                delete(ConsoleSessionRow).where(ConsoleSessionRow.id_hash == id_hash)
            )

    # -- API tokens --

    async def add_token(self, user_id: int, token_id: str, secret_hash: str) -> None:
        async with self._db.transaction(write=True) as session:
            session.add(ApiTokenRow(user_id=user_id, token_id=token_id, secret_hash=secret_hash))

    async def token(self, *, token_id: str, pk: int | None = None) -> StoredToken | None:
        """The token with this public id, looked up by row id when known (the primary key
        is the cheaper index); None if there is none or the row's id is another."""
        query = select(ApiTokenRow, UserRow).join(UserRow, UserRow.id == ApiTokenRow.user_id)
        if pk is not None:
            query = query.where(ApiTokenRow.id == pk)
        else:
            query = query.where(ApiTokenRow.token_id == token_id)
        async with self._db.transaction() as session:
            found = (await session.execute(query)).one_or_none()
        if found is None or found[0].token_id != token_id:
            return None
        row, user = found
        return StoredToken(
            row.id, row.token_id, row.secret_hash, row.last_used_at, record(User, user)
        )

    async def touch_token(self, pk: int, now: datetime, stale: datetime) -> None:
        """Record a use of the token if the last one recorded is at or before `stale`."""
        async with self._db.transaction(write=True) as session:
            await session.execute(
                update(ApiTokenRow)
                .where(
                    ApiTokenRow.id == pk,
                    or_(
                        ApiTokenRow.last_used_at.is_(None),
                        ApiTokenRow.last_used_at <= stale,
                    ),
                )
                .values(last_used_at=now)
            )
