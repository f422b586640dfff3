"""The Store against a real SQLite file and a real PostgreSQL database (`db_url` params)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, delete, event, select, text, update

import harmone.security
import harmone.services.accounts as accounts_module
from harmone.errors import AuthError, ConfigError, Conflict, NotFound, StoreError
from harmone.security import CachedToken, TokenCache
from harmone.services.accounts import Accounts
from harmone.store import Attempt, ChargerIdentity, ChargerState, Store
from harmone.store.db import create_engine, to_async_url
from harmone.store.models import ApiTokenRow, Base, UserRow

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"


@pytest.fixture
def accounts(store: Store) -> Accounts:
    return Accounts(store)


@contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    """Collect the SQL statements (and BEGINs) the store sends while the block runs."""
    seen: list[str] = []
    engine = store.engine.sync_engine

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.strip().split(None, 1)[0].upper())

    def on_begin(conn: Any) -> None:
        seen.append("<BEGIN>")

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "begin", on_begin)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "begin", on_begin)


async def make_site(store: Store, name: str = "Depot") -> str:
    return (await store.sites.create(name, "cloud", cpms_url="wss://cpms.example/ocpp")).uid


# -- URLs and engines ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///harmone.db", "sqlite+aiosqlite:///harmone.db"),
        ("sqlite:////var/lib/h.db", "sqlite+aiosqlite:////var/lib/h.db"),
        ("postgresql://u@db.example/h", "postgresql+asyncpg://u@db.example/h"),
        ("postgres://u:pw@db:5433/h", "postgresql+asyncpg://u:pw@db:5433/h"),
        ("postgresql+asyncpg://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_to_async_url(url: str, expected: str) -> None:
    assert to_async_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/d", "unsupported database URL scheme 'mysql'"),
        ("postgresql+psycopg2://u@h/d", "unsupported database URL scheme"),
        ("harmone.db", "not a database URL"),
        ("", "not a database URL"),
        ("sqlite://host/x.db", "has no host"),
        ("postgresql://u@h", "must name a database"),
    ],
)
def test_to_async_url_refuses(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        to_async_url(url)


def test_to_async_url_masks_password_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        to_async_url("mysql://u:hunter2@h/d")
    assert "hunter2" not in str(info.value)


async def test_sqlite_engine_settings(tmp_path: Any) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(text("PRAGMA foreign_keys")) == 1
            assert await conn.scalar(text("PRAGMA busy_timeout")) >= 5000
    finally:
        await engine.dispose()


async def test_open_refuses_bad_urls(tmp_path: Any) -> None:
    with pytest.raises(ConfigError):
        await Store.open("oracle://scott@h/d")
    with pytest.raises(StoreError, match=r"cannot open database .* does not exist"):
        await Store.open(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    with pytest.raises(StoreError, match="cannot open database"):
        await Store.open("postgresql://nobody:secret@127.0.0.1:1/nothing")


# -- migrations ---------------------------------------------------------------------


async def test_migrate_is_idempotent(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        assert not await store.is_migrated()
        await store.migrate()
        assert await store.is_migrated()
        await store.sites.create("kept", "gateway", gateway_host="10.0.0.2")
        await store.migrate()
        await store.migrate()
        assert await store.is_migrated()
        assert [s.name for s in await store.sites.all()] == ["kept"]
    finally:
        await store.close()


async def test_concurrent_migrations_do_not_collide(db_url: str) -> None:
    stores = [await Store.open(db_url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.migrate() for s in stores))
        assert all([await s.is_migrated() for s in stores])
    finally:
        for s in stores:
            await s.close()


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(ctx, Base.metadata))


async def test_migrations_match_models(store: Store) -> None:
    async with store.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


# -- users --------------------------------------------------------------------------


async def test_create_and_get_users(accounts: Accounts, store: Store) -> None:
    alice = await accounts.create_user("  Alice@Example.ORG ", PASSWORD)
    assert alice.email == "alice@example.org"
    assert alice.role == "operator"
    bob = await accounts.create_user("bob@example.org", PASSWORD, role="viewer")
    assert await accounts.get_user(alice.id) == alice
    assert await accounts.list_users() == [alice, bob]
    with pytest.raises(NotFound):
        await accounts.get_user(bob.id + 100)


async def test_create_user_conflicts_and_validation(accounts: Accounts, store: Store) -> None:
    await accounts.create_user("alice@example.org", PASSWORD)
    with pytest.raises(Conflict, match="already exists"):
        await accounts.create_user("ALICE@example.org", PASSWORD)
    with pytest.raises(ConfigError, match="e-mail"):
        await accounts.create_user("not an address", PASSWORD)
    with pytest.raises(ConfigError, match="at least 8"):
        await accounts.create_user("carol@example.org", "short")
    with pytest.raises(ConfigError, match="role"):
        await accounts.create_user("carol@example.org", PASSWORD, role="root")
    assert len(await accounts.list_users()) == 1


@pytest.mark.usefixtures("real_argon2")
async def test_authenticate(accounts: Accounts, store: Store) -> None:
    alice = await accounts.create_user("alice@example.org", PASSWORD)
    assert await accounts.authenticate("Alice@Example.org", PASSWORD) == alice
    with pytest.raises(AuthError) as wrong:
        await accounts.authenticate("alice@example.org", PASSWORD + "!")
    with pytest.raises(AuthError) as unknown:
        await accounts.authenticate("nobody@example.org", PASSWORD)
    assert str(wrong.value) == str(unknown.value)  # no hint which one was wrong


@pytest.mark.usefixtures("real_argon2")
async def test_passwords_are_hashed_with_rfc_9106_parameters(
    accounts: Accounts, store: Store
) -> None:
    # every other test hashes cheaply (conftest.cheap_argon2_everywhere); HARMON-E never does
    await accounts.create_user("alice@example.org", PASSWORD)
    async with store.engine.connect() as conn:
        stored: str = (await conn.execute(select(UserRow.password_hash))).scalar_one()
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


@pytest.mark.usefixtures("real_argon2")
async def test_authenticate_upgrades_outdated_hashes(
    accounts: Accounts, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await accounts.create_user("alice@example.org", PASSWORD)

    async def stored_hash() -> str:
        async with store.engine.connect() as conn:
            value: str = (await conn.execute(select(UserRow.password_hash))).scalar_one()
            return value

    before = await stored_hash()
    monkeypatch.setattr(accounts_module, "password_needs_rehash", lambda h: h == before)
    await accounts.authenticate("alice@example.org", PASSWORD)
    after = await stored_hash()
    assert after != before
    assert after.startswith("$argon2id$")
    await accounts.authenticate("alice@example.org", PASSWORD)
    assert await stored_hash() == after


async def test_ensure_admin_is_harmless_twice(accounts: Accounts, store: Store) -> None:
    admin, created = await accounts.ensure_admin("Root@Example.org", PASSWORD)
    assert created
    assert admin.role == "admin"
    again, created = await accounts.ensure_admin("root@example.org", "another password")
    assert not created
    assert again == admin
    # the existing password was not replaced
    await accounts.authenticate("root@example.org", PASSWORD)
    with pytest.raises(AuthError):
        await accounts.authenticate("root@example.org", "another password")


async def test_ensure_admin_leaves_existing_operator_alone(
    accounts: Accounts, store: Store
) -> None:
    op = await accounts.create_user("ops@example.org", PASSWORD)
    user, created = await accounts.ensure_admin("ops@example.org", PASSWORD)
    assert not created
    assert user == op
    assert user.role == "operator"


# -- tokens -------------------------------------------------------------------------


async def test_tokens(accounts: Accounts, store: Store) -> None:
    alice = await accounts.create_user("alice@example.org", PASSWORD)
    token = await accounts.create_token("ALICE@example.org")
    assert re.fullmatch(r"hm_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", token)
    assert await accounts.user_for_token(token) == alice
    other = await accounts.create_token("alice@example.org")
    assert other != token
    assert await accounts.user_for_token(other) == alice
    with pytest.raises(NotFound, match="no user"):
        await accounts.create_token("nobody@example.org")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "",
        lambda t: "Bearer " + t,
        lambda t: t + "x",
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # wrong secret
        lambda t: "hm_0123456789abcdef_" + t[-43:],  # unknown token id
        lambda t: t.upper(),
    ],
)
async def test_bad_tokens_are_refused(accounts: Accounts, store: Store, mangle: Any) -> None:
    await accounts.create_user("alice@example.org", PASSWORD)
    token = await accounts.create_token("alice@example.org")
    assert await accounts.user_for_token(mangle(token)) is None


async def test_token_cache_skips_argon2_and_honours_deletion(
    accounts: Accounts, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await accounts.create_user("alice@example.org", PASSWORD)
    token = await accounts.create_token("alice@example.org")
    calls = 0
    real = harmone.security.verify_token_secret

    def counting(secret_hash: str, secret: str) -> bool:
        nonlocal calls
        calls += 1
        return real(secret_hash, secret)

    monkeypatch.setattr(accounts_module, "verify_token_secret", counting)
    for _ in range(5):
        assert await accounts.user_for_token(token) == alice
    assert calls == 1
    # a wrong secret is never cached and always costs a full check
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert await accounts.user_for_token(wrong) is None
    assert await accounts.user_for_token(wrong) is None
    assert calls == 3
    # deleting the token row revokes it at once, cache or not
    async with store.engine.begin() as conn:
        await conn.execute(delete(ApiTokenRow))
    assert await accounts.user_for_token(token) is None


async def test_token_last_used_at_is_written_at_most_once_a_minute(
    accounts: Accounts, store: Store
) -> None:
    await accounts.create_user("alice@example.org", PASSWORD)
    token = await accounts.create_token("alice@example.org")

    async def last_used() -> datetime | None:
        async with store.engine.connect() as conn:
            value: datetime | None = await conn.scalar(select(ApiTokenRow.last_used_at))
            return value

    assert await last_used() is None
    assert await accounts.user_for_token(token) is not None
    first = await last_used()
    assert first is not None
    assert first.tzinfo == UTC
    with statements(store) as seen:
        for _ in range(3):
            assert await accounts.user_for_token(token) is not None
    assert "UPDATE" not in seen
    assert await last_used() == first
    # a minute later it is written again
    async with store.engine.begin() as conn:
        await conn.execute(update(ApiTokenRow).values(last_used_at=first - timedelta(minutes=2)))
    assert await accounts.user_for_token(token) is not None
    later = await last_used()
    assert later is not None
    assert later >= first


def test_token_cache_expires_and_is_bounded() -> None:
    now = [0.0]
    cache = TokenCache(ttl=60, max_entries=3, clock=lambda: now[0])
    cache.put("a", CachedToken(1, 1))
    assert cache.get("a") == CachedToken(1, 1)
    now[0] = 61
    assert cache.get("a") is None
    for name in "bcde":
        cache.put(name, CachedToken(2, 2))
    assert len(cache) == 3
    assert cache.get("b") is None  # the oldest went first
    assert cache.get("e") is not None


async def test_no_plain_password_or_token_in_database(accounts: Accounts, store: Store) -> None:
    await accounts.ensure_admin("root@example.org", PASSWORD)
    token = await accounts.create_token("root@example.org")
    async with store.engine.connect() as conn:
        users = (await conn.execute(select(UserRow.__table__))).all()
        tokens = (await conn.execute(select(ApiTokenRow.__table__))).all()
    assert [u.password_hash[:10] for u in users] == ["$argon2id$"]
    assert [t.secret_hash[:10] for t in tokens] == ["$argon2id$"]
    dump = repr(users) + repr(tokens)
    assert PASSWORD not in dump
    assert token not in dump
    assert token[20:] not in dump  # the secret part


# -- sites --------------------------------------------------------------------------


async def test_sites_crud(store: Store) -> None:
    cloud = await store.sites.create(" Depot ", "cloud", cpms_url="wss://cpms.example/ocpp")
    assert cloud.name == "Depot"
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}", cloud.uid)  # 18 random bytes, URL-safe
    gateway = await store.sites.create("Yard", "gateway", gateway_host="192.168.1.20")
    assert await store.sites.all() == [cloud, gateway]
    assert await store.sites.get(cloud.uid) == cloud
    assert await store.sites.find("nope") is None
    with pytest.raises(NotFound):
        await store.sites.get("nope")

    changed = await store.sites.update(cloud.uid, name="Depot 2", cpms_url=None)
    assert changed.name == "Depot 2"
    assert changed.cpms_url is None
    assert changed.created_at == cloud.created_at
    assert await store.sites.get(cloud.uid) == changed
    changed = await store.sites.update(cloud.uid, type="gateway", gateway_host="10.0.0.9")
    assert (changed.type, changed.gateway_host) == ("gateway", "10.0.0.9")
    assert await store.sites.update(cloud.uid) == changed
    with pytest.raises(NotFound):
        await store.sites.update("nope", name="x")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"uid": "x"}, "cannot set uid"),
        ({"created_at": T0}, "cannot set created_at"),
        ({"name": ""}, "must not be empty"),
        ({"name": 5}, "must be a string"),
        ({"type": "home"}, "'cloud' or 'gateway'"),
        ({"cpms_url": "http://cpms.example"}, "wss://"),
        ({"cpms_url": "wss://"}, "wss://"),
        ({"gateway_host": "a b"}, "host"),
    ],
)
async def test_update_site_validation(store: Store, fields: dict[str, Any], message: str) -> None:
    uid = await make_site(store)
    with pytest.raises(ConfigError, match=re.escape(message)):
        await store.sites.update(uid, **fields)


async def test_create_site_validation(store: Store) -> None:
    with pytest.raises(ConfigError):
        await store.sites.create("x", "datacenter")
    with pytest.raises(ConfigError):
        await store.sites.create("  ", "cloud")
    with pytest.raises(ConfigError, match="gateway_host: a gateway site needs"):
        await store.sites.create("x", "gateway")
    assert await store.sites.all() == []


async def test_update_site_checks_the_whole_site(store: Store) -> None:
    """Rules across fields hold after every change, not only on the fields sent."""
    uid = await make_site(store)
    with pytest.raises(ConfigError, match="gateway_host: a gateway site needs"):
        await store.sites.update(uid, type="gateway")
    site = await store.sites.update(uid, type="gateway", gateway_host=" 10.0.0.9:8443 ")
    assert (site.type, site.gateway_host) == ("gateway", "10.0.0.9:8443")
    with pytest.raises(ConfigError, match="gateway_host: a gateway site needs"):
        await store.sites.update(uid, gateway_host=None)
    assert await store.sites.get(uid) == site
    assert (await store.sites.update(uid)) == site  # nothing to change


async def test_site_uids_are_unique(store: Store) -> None:
    sites = await asyncio.gather(*(store.sites.create(f"s{i}", "cloud") for i in range(20)))
    assert len({s.uid for s in sites}) == 20


async def test_delete_site_cascades_but_keeps_attempts(store: Store) -> None:
    uid = await make_site(store)
    other = await make_site(store, "Other")
    await store.chargers.save_states(
        [ChargerState(uid, "CP1", connectors={1: ("Available", T0)}), ChargerState(other, "X")]
    )
    await store.attempts.add([Attempt(T0, uid, "CP1", "10.0.0.1", True, None)])
    await store.sites.delete(uid)
    assert await store.sites.find(uid) is None
    assert await store.chargers.find(uid, "CP1") is None
    async with store.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM connectors")) == 0
        assert await conn.scalar(text("SELECT count(*) FROM chargers")) == 1
    assert [a.charge_point_id for a in await store.attempts.of_site(uid)] == ["CP1"]
    assert [a.site_uid for a in await store.attempts.unknown_sites()] == [uid]
    with pytest.raises(NotFound):
        await store.sites.delete(uid)


# -- chargers -----------------------------------------------------------------------


async def test_register_charger_is_idempotent(store: Store) -> None:
    uid = await make_site(store)
    first = await store.chargers.register(uid, "CP-1")
    assert first.id == "CP-1"
    assert not first.connected
    assert first.connectors == ()
    assert await store.chargers.register(uid, "CP-1") == first
    assert await store.chargers.get(uid, "CP-1") == first
    with pytest.raises(NotFound, match="no site"):
        await store.chargers.register("nope", "CP-1")
    with pytest.raises(ConfigError):
        await store.chargers.register(uid, "")


async def test_register_charger_concurrently(store: Store) -> None:
    uid = await make_site(store)
    results = await asyncio.gather(*(store.chargers.register(uid, "CP-1") for _ in range(20)))
    assert len({(c.site_uid, c.id, c.created_at) for c in results}) == 1
    assert [c.id for c in await store.chargers.of_site(uid)] == ["CP-1"]


async def test_find_get_update_charger(store: Store) -> None:
    uid = await make_site(store)
    assert await store.chargers.find(uid, "CP1") is None
    with pytest.raises(NotFound):
        await store.chargers.get(uid, "CP1")
    await store.chargers.register(uid, "CP1")
    changed = await store.chargers.update(uid, "CP1", name="Bay 1", cpms_url="ws://other:9000")
    assert (changed.name, changed.cpms_url) == ("Bay 1", "ws://other:9000")
    assert await store.chargers.get(uid, "CP1") == changed
    changed = await store.chargers.update(uid, "CP1", cpms_url=None, name="")
    assert (changed.name, changed.cpms_url) == (None, None)
    with pytest.raises(ConfigError, match="cannot set vendor"):
        await store.chargers.update(uid, "CP1", vendor="x")
    with pytest.raises(ConfigError):
        await store.chargers.update(uid, "CP1", cpms_url="https://x")
    with pytest.raises(NotFound):
        await store.chargers.update(uid, "CP2", name="x")


async def test_list_chargers_with_connectors_in_few_queries(store: Store) -> None:
    uid = await make_site(store)
    other = await make_site(store, "Other")
    states = [
        ChargerState(uid, f"CP{i:02d}", connectors={2: ("Charging", T0), 1: ("Available", T0)})
        for i in reversed(range(10))
    ]
    await store.chargers.save_states([*states, ChargerState(other, "ZZ")])
    with statements(store) as seen:
        chargers = await store.chargers.of_site(uid)
    assert [c.id for c in chargers] == [f"CP{i:02d}" for i in range(10)]
    assert all(
        [(k.id, k.status) for k in c.connectors] == [(1, "Available"), (2, "Charging")]
        for c in chargers
    )
    assert seen.count("SELECT") <= 2
    with pytest.raises(NotFound):
        await store.chargers.of_site("nope")
    assert await store.chargers.of_site(await make_site(store, "Empty")) == []


async def test_save_charger_states(store: Store) -> None:
    uid = await make_site(store)
    await store.chargers.register(uid, "CP1")
    await store.chargers.update(uid, "CP1", name="Bay 1")
    boot = ChargerState(
        uid,
        "CP1",
        ocpp_version="1.6",
        connected=True,
        upstream_connected=True,
        last_seen=T0,
        identity=ChargerIdentity(
            vendor="ACME", model="Wallbox", serial_number="S-1", firmware_version="1.0"
        ),
        connectors={1: ("Available", T0)},
    )
    with statements(store) as seen:
        await store.chargers.save_states(
            [
                boot,
                ChargerState(uid, "NEW", connected=True, connectors={0: ("Available", T0)}),
                ChargerState("no-such-site", "X", connected=True),
            ]
        )
    assert seen.count("<BEGIN>") == 1  # one transaction for the whole batch
    cp1 = await store.chargers.get(uid, "CP1")
    assert cp1.name == "Bay 1"  # not part of a state: untouched
    assert (cp1.ocpp_version, cp1.identity.vendor, cp1.identity.model) == (
        "1.6",
        "ACME",
        "Wallbox",
    )
    assert (cp1.identity.serial_number, cp1.identity.firmware_version) == ("S-1", "1.0")
    assert (cp1.connected, cp1.upstream_connected, cp1.last_seen) == (True, True, T0)
    assert [(k.id, k.status, k.updated_at) for k in cp1.connectors] == [(1, "Available", T0)]
    new = await store.chargers.get(uid, "NEW")
    assert new.connected
    assert [k.id for k in new.connectors] == [0]

    # None leaves a field alone; a later state in the batch wins; connectors are upserted
    t1 = T0 + timedelta(seconds=30)
    await store.chargers.save_states(
        [
            ChargerState(uid, "CP1", upstream_connected=False, connectors={1: ("Charging", t1)}),
            ChargerState(uid, "CP1", last_seen=t1, connectors={2: ("Faulted", t1)}),
            ChargerState(uid, "CP1", connected=False),
            # within an identity too, None leaves a field alone
            ChargerState(uid, "CP1", identity=ChargerIdentity(firmware_version="2.0")),
        ]
    )
    cp1 = await store.chargers.get(uid, "CP1")
    assert (cp1.connected, cp1.upstream_connected, cp1.last_seen) == (False, False, t1)
    assert cp1.identity == ChargerIdentity(
        vendor="ACME", model="Wallbox", serial_number="S-1", firmware_version="2.0"
    )
    assert [(k.id, k.status) for k in cp1.connectors] == [(1, "Charging"), (2, "Faulted")]
    await store.chargers.save_states([])


async def test_mark_all_disconnected(store: Store) -> None:
    uid = await make_site(store)
    await store.chargers.save_states(
        [
            ChargerState(uid, "A", connected=True, upstream_connected=True),
            ChargerState(uid, "B", connected=True),
            ChargerState(uid, "C"),
        ]
    )
    await store.chargers.mark_all_disconnected()
    chargers = await store.chargers.of_site(uid)
    assert [(c.connected, c.upstream_connected) for c in chargers] == [(False, False)] * 3


async def test_datetimes_round_trip_as_aware_utc(store: Store) -> None:
    uid = await make_site(store)
    plus_two = datetime(2025, 6, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    await store.chargers.save_states([ChargerState(uid, "CP1", last_seen=plus_two)])
    charger = await store.chargers.get(uid, "CP1")
    assert charger.last_seen == plus_two
    assert charger.last_seen is not None
    assert charger.last_seen.tzinfo == UTC
    assert charger.last_seen.hour == 12
    assert charger.created_at.tzinfo == UTC
    assert (await store.sites.get(uid)).created_at.tzinfo == UTC
    with pytest.raises(StoreError, match="naive"):
        await store.chargers.save_states([ChargerState(uid, "CP1", last_seen=datetime(2025, 1, 1))])


# -- connection attempts ------------------------------------------------------------


def attempt(site_uid: str, seconds: int, cp: str = "CP1", **kw: Any) -> Attempt:
    return Attempt(
        at=T0 + timedelta(seconds=seconds),
        site_uid=site_uid,
        charge_point_id=cp,
        remote_addr="203.0.113.7",
        accepted=kw.pop("accepted", True),
        reason=kw.pop("reason", None),
        **kw,
    )


async def test_attempts_newest_first(store: Store) -> None:
    uid = await make_site(store)
    refused = attempt(
        uid,
        5,
        "CP2",
        accepted=False,
        reason="the charger offered no OCPP version HARMON-E speaks",
        offered_subprotocols=("ocpp1.5", "foo"),
        http_status=400,
    )
    ok = attempt(uid, 3, subprotocol="ocpp1.6", offered_subprotocols=("ocpp1.6",))
    await store.attempts.add([ok, refused, attempt("elsewhere", 9)])
    assert await store.attempts.of_site(uid) == [refused, ok]
    assert await store.attempts.of_site(uid, limit=1) == [refused]
    assert await store.attempts.of_site("nobody") == []
    unknown = await store.attempts.unknown_sites()
    assert [(a.site_uid, a.at) for a in unknown] == [("elsewhere", T0 + timedelta(seconds=9))]
    await store.attempts.add([])


async def test_attempts_are_pruned_per_site(store: Store) -> None:
    uid = await make_site(store)
    other = await make_site(store, "Other")
    await store.attempts.add([attempt(other, i) for i in range(8)])
    await store.attempts.add([attempt(uid, i) for i in range(10)], keep_per_site=5)
    kept = await store.attempts.of_site(uid)
    assert [a.at for a in kept] == [T0 + timedelta(seconds=s) for s in range(9, 4, -1)]
    # only the sites in the batch are pruned
    assert len(await store.attempts.of_site(other)) == 8
    # equal timestamps: the ones inserted last are the newest
    same = [attempt(uid, 100, cp=f"T{i}") for i in range(4)]
    await store.attempts.add(same, keep_per_site=3)
    assert [a.charge_point_id for a in await store.attempts.of_site(uid)] == ["T3", "T2", "T1"]
    with pytest.raises(ConfigError):
        await store.attempts.add([attempt(uid, 1)], keep_per_site=0)


async def test_unknown_site_attempts_limit(store: Store) -> None:
    await store.attempts.add([attempt(f"ghost{i}", i) for i in range(5)])
    assert [a.site_uid for a in await store.attempts.unknown_sites(limit=2)] == [
        "ghost4",
        "ghost3",
    ]
