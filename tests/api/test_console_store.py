"""Storage for the console: accounts (roles, site restrictions) and sessions, on SQLite and
PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select

from harmone.errors import ConfigError, Conflict, NotFound
from harmone.services.accounts import Accounts
from harmone.store import Store
from harmone.store.models import ConsoleSessionRow

PASSWORD = "correct horse battery"


@pytest.fixture
def accounts(store: Store) -> Accounts:
    return Accounts(store)


HOUR = timedelta(hours=1)


pytestmark = pytest.mark.usefixtures("cheap_argon2")


async def test_accounts_with_and_without_site_restrictions(
    accounts: Accounts, store: Store
) -> None:
    a = await store.sites.create("A", "cloud")
    b = await store.sites.create("B", "cloud")
    everyone = await accounts.create_account("all@example.org", PASSWORD, "viewer")
    limited = await accounts.create_account("one@example.org", PASSWORD, "operator", [a.uid])
    assert everyone.sites is None and limited.sites == frozenset({a.uid})
    assert await accounts.user_sites(limited.user.id) == frozenset({a.uid})
    assert await accounts.user_sites(everyone.user.id) is None
    assert [acc.sites for acc in await accounts.list_accounts()] == [None, frozenset({a.uid})]

    changed = await accounts.update_account(limited.user.id, sites=[a.uid, b.uid], role="viewer")
    assert changed.sites == frozenset({a.uid, b.uid}) and changed.user.role == "viewer"
    assert (await accounts.update_account(limited.user.id, sites=None)).sites is None
    assert (await accounts.update_account(limited.user.id, sites=[])).sites == frozenset()
    with pytest.raises(ConfigError, match="no site 'nope'"):
        await accounts.update_account(limited.user.id, sites=["nope"])
    with pytest.raises(ConfigError, match="no site"):
        await accounts.create_account("x@example.org", PASSWORD, "viewer", ["nope"])
    with pytest.raises(ConfigError, match="an admin sees every site"):
        await accounts.create_account("y@example.org", PASSWORD, "admin", [a.uid])
    with pytest.raises(Conflict):
        await accounts.create_account("ALL@example.org", PASSWORD, "viewer")
    with pytest.raises(NotFound):
        await accounts.get_account(9999)


async def test_deleting_the_last_allowed_site_never_widens_a_restriction(
    accounts: Accounts, store: Store
) -> None:
    a = await store.sites.create("A", "cloud")
    user = await accounts.create_account("one@example.org", PASSWORD, "viewer", [a.uid])
    await store.sites.delete(a.uid)
    assert await accounts.user_sites(user.user.id) == frozenset()  # nothing, not everything


async def test_becoming_admin_lifts_the_restriction(accounts: Accounts, store: Store) -> None:
    a = await store.sites.create("A", "cloud")
    user = await accounts.create_account("one@example.org", PASSWORD, "operator", [a.uid])
    promoted = await accounts.update_account(user.user.id, role="admin")
    assert promoted.sites is None and promoted.user.role == "admin"
    with pytest.raises(ConfigError, match="an admin sees every site"):
        await accounts.update_account(user.user.id, sites=[a.uid])


async def test_the_last_admin_stays(accounts: Accounts, store: Store) -> None:
    boss = await accounts.create_account("boss@example.org", PASSWORD, "admin")
    with pytest.raises(Conflict, match="last admin"):
        await accounts.delete_user(boss.user.id)
    with pytest.raises(Conflict, match="last admin"):
        await accounts.update_account(boss.user.id, role="viewer")
    other = await accounts.create_account("other@example.org", PASSWORD, "admin")
    await accounts.update_account(boss.user.id, role="viewer")
    await accounts.delete_user(boss.user.id)
    with pytest.raises(NotFound):
        await accounts.delete_user(boss.user.id)
    assert [a.user.email for a in await accounts.list_accounts()] == [other.user.email]


async def test_admins_cannot_demote_or_delete_themselves(accounts: Accounts) -> None:
    boss = (await accounts.create_account("boss@example.org", PASSWORD, "admin")).user
    other = (await accounts.create_account("other@example.org", PASSWORD, "admin")).user
    with pytest.raises(Conflict, match="your own role"):
        await accounts.update_account(boss.id, role="viewer", acting=boss)
    with pytest.raises(Conflict, match="your own account"):
        await accounts.delete_user(boss.id, acting=boss)
    # the same changes by another admin, or keeping one's own role, are fine
    assert (await accounts.update_account(boss.id, role="admin", acting=boss)).user == boss
    assert (await accounts.update_account(boss.id, role="viewer", acting=other)).user.role == (
        "viewer"
    )
    await accounts.delete_user(boss.id, acting=other)
    assert [a.user for a in await accounts.list_accounts()] == [other]


async def test_sessions(accounts: Accounts, store: Store) -> None:
    user = await accounts.create_account("s@example.org", PASSWORD, "viewer")
    session_id = await accounts.create_session(user.user.id, HOUR)
    found = await accounts.session_account(session_id, HOUR)
    assert found is not None and found.user == user.user and found.sites is None
    async with store.engine.connect() as conn:
        stored = list((await conn.execute(select(ConsoleSessionRow.id_hash))).scalars())
    assert stored == [hashlib.sha256(session_id.encode()).hexdigest()]
    assert await accounts.session_account(session_id, timedelta(0)) is None  # idle too long
    assert await accounts.session_account("not-a-session", HOUR) is None
    assert await accounts.session_account("x" * 500, HOUR) is None
    await accounts.delete_session(session_id)
    assert await accounts.session_account(session_id, HOUR) is None


async def test_session_lifetime_and_password_change(accounts: Accounts, store: Store) -> None:
    user = await accounts.create_account("s@example.org", PASSWORD, "viewer")
    expired = await accounts.create_session(user.user.id, timedelta(0))
    assert await accounts.session_account(expired, HOUR) is None
    live = await accounts.create_session(user.user.id, HOUR)  # also sweeps the expired one
    async with store.engine.connect() as conn:
        assert len(list((await conn.execute(select(ConsoleSessionRow.id_hash))).scalars())) == 1
    await accounts.update_account(user.user.id, password="another password")
    assert await accounts.session_account(live, HOUR) is None  # a new password ends sessions
    assert (await accounts.authenticate("s@example.org", "another password")).id == user.user.id
    with pytest.raises(NotFound):
        await accounts.create_session(9999, HOUR)


async def test_deleting_a_user_ends_sessions_and_tokens(accounts: Accounts, store: Store) -> None:
    await accounts.create_account("boss@example.org", PASSWORD, "admin")
    user = await accounts.create_account("gone@example.org", PASSWORD, "operator")
    session_id = await accounts.create_session(user.user.id, HOUR)
    token = await accounts.create_token("gone@example.org")
    assert await accounts.user_for_token(token) is not None
    await accounts.delete_user(user.user.id)
    assert await accounts.session_account(session_id, HOUR) is None
    assert await accounts.user_for_token(token) is None


async def test_charger_counts(store: Store) -> None:
    a = await store.sites.create("A", "cloud")
    await store.sites.create("B", "cloud")
    for cid in ("1", "2"):
        await store.chargers.register(a.uid, cid)
    assert await store.chargers.counts() == {a.uid: 2}
