"""Users, their password hashes and the sites they are limited to.

Rules (valid e-mail addresses and passwords, roles, "at least one admin remains") belong to
`harmone.services.accounts`; this repository stores what it is given and keeps each change
atomic (`UserRepo.edit`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from harmone.errors import Conflict, InvalidFields, NotFound
from harmone.store.db import Database
from harmone.store.models import ConsoleSessionRow, SiteRow, UserRow, UserSiteRow
from harmone.store.records import SiteScope, User, UserAccount
from harmone.store.rows import record

__all__ = ["UserEdit", "UserRepo", "site_scope"]

log = logging.getLogger(__name__)


def _user(row: UserRow) -> User:
    # The role column is guarded by a CHECK constraint, so it is one of Role's values.
    return record(User, row)


async def site_scope(session: AsyncSession, row: UserRow) -> SiteScope:
    """The sites the user of `row` may see (None: every site)."""
    if not row.sites_restricted:
        return None
    uids = await session.scalars(select(UserSiteRow.site_uid).where(UserSiteRow.user_id == row.id))
    return frozenset(uids)


async def _known_sites(session: AsyncSession, sites: Collection[str]) -> frozenset[str]:
    wanted = frozenset(sites)
    if not wanted:
        return wanted
    found = set(await session.scalars(select(SiteRow.uid).where(SiteRow.uid.in_(wanted))))
    missing = sorted(wanted - found)
    if missing:
        raise InvalidFields({"sites": f"no site {', '.join(repr(m) for m in missing)}"})
    return wanted


class UserEdit:
    """One user being changed inside one write transaction (see `UserRepo.edit`)."""

    def __init__(self, session: AsyncSession, row: UserRow, account: UserAccount) -> None:
        self._session = session
        self._row = row
        #: The user as they were when the edit began.
        self.before = account

    async def other_admins(self) -> int:
        """How many admins there are besides this user."""
        count = await self._session.scalar(
            select(func.count())
            .select_from(UserRow)
            .where(UserRow.role == "admin", UserRow.id != self._row.id)
        )
        return int(count or 0)

    async def set_role(self, role: str) -> None:
        self._row.role = role

    async def set_sites(self, sites: Collection[str] | None) -> None:
        """Limit the user to `sites` (None: every site); ConfigError for an unknown site."""
        scope = None if sites is None else await _known_sites(self._session, sites)
        await self._session.execute(delete(UserSiteRow).where(UserSiteRow.user_id == self._row.id))
        self._session.add_all(UserSiteRow(user_id=self._row.id, site_uid=u) for u in scope or ())
        self._row.sites_restricted = scope is not None

    async def set_password_hash(self, password_hash: str) -> None:
        self._row.password_hash = password_hash

    async def end_sessions(self) -> None:
        """Sign the user out of every console session."""
        await self._session.execute(
            delete(ConsoleSessionRow).where(ConsoleSessionRow.user_id == self._row.id)
        )

    async def delete(self) -> None:
        """Delete the user; the database cascades to tokens, sessions and site links."""
        await self._session.execute(delete(UserRow).where(UserRow.id == self._row.id))

    async def after(self) -> UserAccount:
        """The user as the edit leaves them."""
        await self._session.flush()
        return UserAccount(_user(self._row), await site_scope(self._session, self._row))


class UserRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, email: str, password_hash: str, role: str, sites: Collection[str] | None = None
    ) -> UserAccount:
        """A new user limited to `sites` (None: every site), in one transaction.

        Conflict if the e-mail is taken, ConfigError for an unknown site.
        """
        async with self._db.transaction(write=True) as session:
            scope = None if sites is None else await _known_sites(session, sites)
            row = UserRow(
                email=email,
                password_hash=password_hash,
                role=role,
                sites_restricted=scope is not None,
            )
            session.add(row)
            try:
                await session.flush()
            except IntegrityError as exc:
                raise Conflict(f"a user with e-mail {email!r} already exists") from exc
            session.add_all(UserSiteRow(user_id=row.id, site_uid=uid) for uid in scope or ())
            account = UserAccount(_user(row), scope)
        log.info("created user %s (%s)", email, role)
        return account

    async def find_by_email(self, email: str) -> User | None:
        async with self._db.transaction() as session:
            row = await session.scalar(select(UserRow).where(UserRow.email == email))
            return _user(row) if row else None

    async def credentials(self, email: str) -> tuple[User, str] | None:
        """The user with this e-mail and their password hash, or None."""
        async with self._db.transaction() as session:
            row = await session.scalar(select(UserRow).where(UserRow.email == email))
            return (_user(row), row.password_hash) if row else None

    async def replace_password_hash(self, user_id: int, password_hash: str) -> None:
        """Store a new hash of the same password (stronger hashing parameters)."""
        async with self._db.transaction(write=True) as session:
            await session.execute(
                update(UserRow).where(UserRow.id == user_id).values(password_hash=password_hash)
            )

    async def get(self, user_id: int) -> User:
        """The user with this id; NotFound otherwise."""
        async with self._db.transaction() as session:
            row = await session.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            return _user(row)

    async def all(self) -> list[User]:
        """Every user, oldest first."""
        async with self._db.transaction() as session:
            rows = await session.scalars(select(UserRow).order_by(UserRow.id))
            return [_user(row) for row in rows]

    async def scope(self, user_id: int) -> SiteScope:
        """The sites user `user_id` may see: None for every site; NotFound for no such user."""
        return (await self.account(user_id)).sites

    async def account(self, user_id: int) -> UserAccount:
        """The user `user_id` with their site restriction; NotFound otherwise."""
        async with self._db.transaction() as session:
            row = await session.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            return UserAccount(_user(row), await site_scope(session, row))

    async def accounts(self) -> list[UserAccount]:
        """Every user with their site restriction, oldest first (two queries)."""
        async with self._db.transaction() as session:
            rows = list(await session.scalars(select(UserRow).order_by(UserRow.id)))
            links = await session.execute(select(UserSiteRow.user_id, UserSiteRow.site_uid))
            by_user: dict[int, set[str]] = defaultdict(set)
            for user_id, site_uid in links:
                by_user[user_id].add(site_uid)
            return [
                UserAccount(
                    _user(row),
                    frozenset(by_user.get(row.id, ())) if row.sites_restricted else None,
                )
                for row in rows
            ]

    @asynccontextmanager
    async def edit(self, user_id: int) -> AsyncIterator[UserEdit]:
        """User `user_id` to change in one write transaction: everything the block does is
        committed together, or nothing if it raises. NotFound for no such user."""
        async with self._db.transaction(write=True) as session:
            row = await session.get(UserRow, user_id)
            if row is None:
                raise NotFound(f"no user with id {user_id}")
            yield UserEdit(session, row, UserAccount(_user(row), await site_scope(session, row)))
