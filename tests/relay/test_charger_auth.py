"""Charger authentication (HTTP Basic, OCPP security profile 1) over real sockets on 127.0.0.1,
the password REST endpoint, and the pure pieces (header parsing, lock-out counting)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from support import (
    FAST_RELAY,
    ON_SHARED_SERVER,
    RawCpms,
    charger,
    client_for,
    harmone_server,
    recv_json,
    wait_for,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harmone.errors import ConfigError, NotFound
from harmone.relay.admission import Refusal
from harmone.relay.charger_auth import FailureCounter, parse_basic
from harmone.services.sites import ocpp_url
from harmone.store import Store
from harmone.store.records import Attempt, Site
from harmone.web.serve import RunningServer

PASSWORD = "correct-horse-battery-staple"  # 28 printable ASCII characters
CHALLENGE = 'Basic realm="OCPP"'


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def auth_site(srv: RunningServer, cpms_url: str | None) -> tuple[Site, str]:
    site = await srv.runtime.store.sites.create(
        "Secure depot", "cloud", cpms_url=cpms_url, charger_auth=True
    )
    return site, ocpp_url(site, srv.runtime.cloud_base_url)


async def log_of(srv: RunningServer, site_uid: str) -> list[Attempt]:
    await srv.runtime.hub.flush_attempts()
    return await srv.runtime.store.attempts.of_site(site_uid)


async def refused(url: str, **kw: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info:
        await charger(url, **kw)
    return info.value


# -- the handshake -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "charger sent no credentials (HTTP Basic) but the site requires them"),
        (basic("CP-1", "not-the-password-at-all"), "wrong password for charger CP-1"),
        (basic("CP-2", PASSWORD), "user name CP-2 does not match the charger identity CP-1"),
        ("Bearer abc", "charger sent Bearer credentials but the site requires HTTP Basic"),
        ("Basic !!!", "the charger's HTTP Basic credentials are malformed"),
    ],
)
@ON_SHARED_SERVER
async def test_bad_credentials_are_refused_before_the_cpms_is_dialled(
    shared_srv: RunningServer, authorization: str | None, reason: str
) -> None:
    # one server for the table: each case has a site (failures count per site and charger)
    srv = shared_srv
    async with RawCpms() as cpms:
        site, url = await auth_site(srv, cpms.url)
        await srv.runtime.store.chargers.set_password(site.uid, "CP-1", PASSWORD)
        headers = {"Authorization": authorization} if authorization else None
        error = await refused(f"{url}/CP-1", additional_headers=headers)
        assert error.response.status_code == 401
        assert error.response.headers["WWW-Authenticate"] == CHALLENGE
        (attempt,) = await log_of(srv, site.uid)
        assert not attempt.accepted and attempt.http_status == 401
        assert (attempt.reason or "").startswith(reason)
        assert cpms.connects == 0 and not cpms.headers  # never reached the CPMS
        # The charger is not told which chargers have a password, the log is.
        if authorization and authorization.startswith("Basic C"):
            assert b"connection log" in error.response.body
            assert PASSWORD.encode() not in error.response.body


async def test_no_password_set_is_refused(tmp_path: Path) -> None:
    async with RawCpms() as cpms, harmone_server(tmp_path) as srv:
        site, url = await auth_site(srv, cpms.url)
        auth = {"Authorization": basic("CP-NEW", PASSWORD)}
        error = await refused(f"{url}/CP-NEW", additional_headers=auth)
        assert error.response.status_code == 401
        assert error.response.headers["WWW-Authenticate"] == CHALLENGE
        (attempt,) = await log_of(srv, site.uid)
        assert attempt.reason == "no password set for this charger in HARMON-E"
        assert cpms.connects == 0
        # Refused chargers are not registered.
        assert await srv.runtime.store.chargers.find(site.uid, "CP-NEW") is None


async def test_right_password_is_accepted_and_the_header_still_reaches_the_cpms(
    tmp_path: Path,
) -> None:
    async with RawCpms() as cpms, harmone_server(tmp_path) as srv:
        site, url = await auth_site(srv, cpms.url)
        await srv.runtime.store.chargers.set_password(site.uid, "CP-1", PASSWORD)
        auth = basic("CP-1", PASSWORD)
        async with await charger(f"{url}/CP-1", additional_headers={"Authorization": auth}) as ws:
            assert cpms.headers["CP-1"]["Authorization"] == auth  # unchanged
            await ws.send('[2,"1","Heartbeat",{}]')
            assert await recv_json(ws) == [3, "1", {"cpms": "answer"}]
        (attempt,) = await log_of(srv, site.uid)
        assert attempt.accepted and attempt.reason is None


async def test_user_name_is_the_decoded_identity(tmp_path: Path) -> None:
    async with harmone_server(tmp_path) as srv:
        site, url = await auth_site(srv, None)
        # The identity is kept as received (percent-encoded); the Basic user name is plain.
        await srv.runtime.store.chargers.set_password(site.uid, "CP%2D9", PASSWORD)
        auth = {"Authorization": basic("CP-9", PASSWORD)}
        async with await charger(f"{url}/CP%2D9", additional_headers=auth) as ws:
            await ws.send('[2,"1","Heartbeat",{}]')
            assert (await recv_json(ws))[1] == "1"


async def test_sites_without_charger_auth_do_not_ask(tmp_path: Path) -> None:
    async with RawCpms() as cpms, harmone_server(tmp_path) as srv:
        site = await srv.runtime.store.sites.create("Open", "cloud", cpms_url=cpms.url)
        assert not site.charger_auth
        url = ocpp_url(site, srv.runtime.cloud_base_url)
        async with await charger(f"{url}/CP-1"):
            await cpms.wait_for(lambda: "CP-1" in cpms.conns)


async def test_repeated_failures_lock_the_charger_out_with_429(tmp_path: Path) -> None:
    relay = dataclasses.replace(FAST_RELAY, auth_max_failures=3, auth_failure_window=60.0)
    async with RawCpms() as cpms, harmone_server(tmp_path, relay=relay) as srv:
        site, url = await auth_site(srv, cpms.url)
        store = srv.runtime.store
        await store.chargers.set_password(site.uid, "CP-1", PASSWORD)
        await store.chargers.set_password(site.uid, "CP-2", PASSWORD)
        wrong = {"Authorization": basic("CP-1", "guess-guess-guess-1")}
        for _ in range(3):
            assert (
                await refused(f"{url}/CP-1", additional_headers=wrong)
            ).response.status_code == 401
        # Locked out: even the right password is not checked now.
        right = {"Authorization": basic("CP-1", PASSWORD)}
        error = await refused(f"{url}/CP-1", additional_headers=right)
        assert error.response.status_code == 429
        assert 1 <= int(error.response.headers["Retry-After"]) <= 60
        newest = (await log_of(srv, site.uid))[0]
        assert newest.http_status == 429
        assert (newest.reason or "").startswith(
            "too many failed authentication attempts for charger CP-1: 3 in the last 1 minute"
        )
        # Other chargers are unaffected.
        other = {"Authorization": basic("CP-2", PASSWORD)}
        async with await charger(f"{url}/CP-2", additional_headers=other):
            await cpms.wait_for(lambda: "CP-2" in cpms.conns)
        assert "CP-1" not in cpms.headers


async def test_an_unauthenticated_charger_cannot_displace_a_connected_one(tmp_path: Path) -> None:
    async with RawCpms() as cpms, harmone_server(tmp_path) as srv:
        site, url = await auth_site(srv, cpms.url)
        await srv.runtime.store.chargers.set_password(site.uid, "CP-1", PASSWORD)
        auth = {"Authorization": basic("CP-1", PASSWORD)}
        async with await charger(f"{url}/CP-1", additional_headers=auth) as ws:
            await refused(f"{url}/CP-1")  # same identity, no credentials
            await ws.send('[2,"still","Heartbeat",{}]')
            assert (await recv_json(ws))[1] == "still"
            assert cpms.connects == 1


# -- REST ----------------------------------------------------------------------------------


async def test_charger_auth_is_a_site_field(srv: RunningServer) -> None:
    async with await client_for(srv, "operator") as api:
        r = await api.post("/api/v1/sites", json={"name": "S", "type": "cloud"})
        assert r.status_code == 201 and r.json()["charger_auth"] is False
        uid = r.json()["uid"]
        r = await api.post(
            "/api/v1/sites", json={"name": "T", "type": "cloud", "charger_auth": True}
        )
        assert r.json()["charger_auth"] is True
        r = await api.patch(f"/api/v1/sites/{uid}", json={"charger_auth": True})
        assert r.status_code == 200 and r.json()["charger_auth"] is True
        assert (await api.get(f"/api/v1/sites/{uid}")).json()["charger_auth"] is True
        for bad in (None, "yes", 1):
            r = await api.patch(f"/api/v1/sites/{uid}", json={"charger_auth": bad})
            assert r.status_code == 422, bad
            assert "charger_auth" in r.json()["detail"]


async def test_switching_auth_on_makes_connected_chargers_reconnect(srv: RunningServer) -> None:
    site = await srv.runtime.store.sites.create("S", "cloud")
    url = ocpp_url(site, srv.runtime.cloud_base_url)
    async with await client_for(srv, "admin") as api, await charger(f"{url}/CP-1") as ws:
        await wait_for(lambda: bool(srv.runtime.hub.links))
        r = await api.patch(f"/api/v1/sites/{site.uid}", json={"charger_auth": True})
        assert r.status_code == 200
        with pytest.raises(ConnectionClosed) as info:
            await recv_json(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1012
        error = await refused(f"{url}/CP-1")
        assert error.response.status_code == 401


async def test_password_endpoint_sets_registers_and_replaces(srv: RunningServer) -> None:
    site = await srv.runtime.store.sites.create("S", "cloud", charger_auth=True)
    path = f"/api/v1/sites/{site.uid}/chargers/CP-NEW/password"
    async with await client_for(srv, "operator") as api:
        r = await api.put(path, json={"password": PASSWORD})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == "CP-NEW" and body["password_set"] is True
        assert body["connected"] is False
        assert "password" not in body and PASSWORD not in r.text
        r = await api.get(f"/api/v1/sites/{site.uid}/chargers")
        assert [(c["id"], c["password_set"]) for c in r.json()] == [("CP-NEW", True)]
        # The charger can now connect with it.
        url = ocpp_url(site, srv.runtime.cloud_base_url)
        auth = {"Authorization": basic("CP-NEW", PASSWORD)}
        async with await charger(f"{url}/CP-NEW", additional_headers=auth):
            pass
        # Replaced: the old one no longer works.
        assert (await api.put(path, json={"password": "another-password-16"})).status_code == 200
        assert (await refused(f"{url}/CP-NEW", additional_headers=auth)).response.status_code == 401
        r = await api.put("/api/v1/sites/nope/chargers/CP-1/password", json={"password": PASSWORD})
        assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"password": "short"}, "16 to 40 characters"),
        ({"password": "x" * 41}, "16 to 40 characters"),
        ({"password": "sixteen-chars-é-é"}, "printable ASCII"),
        ({"password": "sixteen\tchars-tab!"}, "printable ASCII"),
        ({}, "password"),
        ({"password": PASSWORD, "user": "x"}, "user"),
        ({"password": 1234567890123456}, "password"),
    ],
)
@ON_SHARED_SERVER
async def test_password_endpoint_validation(
    shared_srv: RunningServer, shared_admin: httpx.AsyncClient, body: dict[str, object], detail: str
) -> None:
    # one server for the table: each case has a site of its own
    site = await shared_srv.runtime.store.sites.create("S", "cloud")
    r = await shared_admin.put(f"/api/v1/sites/{site.uid}/chargers/CP-1/password", json=body)
    assert r.status_code == 422, r.text
    assert detail in r.json()["detail"]
    assert await shared_srv.runtime.store.chargers.find(site.uid, "CP-1") is None


async def test_password_endpoint_refuses_impossible_identities(srv: RunningServer) -> None:
    site = await srv.runtime.store.sites.create("S", "cloud")
    async with await client_for(srv, "admin") as api:
        r = await api.put(
            f"/api/v1/sites/{site.uid}/chargers/{'X' * 49}/password", json={"password": PASSWORD}
        )
        assert r.status_code == 422 and "longer than 48" in r.json()["detail"]


async def test_viewers_may_not_set_passwords(srv: RunningServer) -> None:
    site = await srv.runtime.store.sites.create("S", "cloud")
    path = f"/api/v1/sites/{site.uid}/chargers/CP-1/password"
    async with await client_for(srv, "viewer") as api:
        r = await api.put(path, json={"password": PASSWORD})
        assert r.status_code == 403 and "viewer" in r.json()["detail"]
        r = await api.patch(f"/api/v1/sites/{site.uid}", json={"charger_auth": True})
        assert r.status_code == 403
    async with httpx.AsyncClient(base_url=srv.url) as anonymous:
        assert (await anonymous.put(path, json={"password": PASSWORD})).status_code == 401
    assert await srv.runtime.store.chargers.find(site.uid, "CP-1") is None


@pytest.mark.usefixtures("real_argon2")
async def test_passwords_are_never_stored_in_clear(srv: RunningServer, tmp_path: Path) -> None:
    site = await srv.runtime.store.sites.create("S", "cloud", charger_auth=True)
    async with await client_for(srv, "admin") as api:
        for n in range(3):
            r = await api.put(
                f"/api/v1/sites/{site.uid}/chargers/CP-{n}/password",
                json={"password": f"{PASSWORD}-{n}"},
            )
            assert r.status_code == 200
    async with srv.runtime.store.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT id, password_hash FROM chargers"))).all()
    assert len(rows) == 3
    for charger_id, password_hash in rows:
        assert password_hash.startswith("$argon2id$"), charger_id
        assert PASSWORD not in password_hash

    def database_bytes() -> bytes:  # the database file and its journal/WAL, as on disk
        return b"".join(p.read_bytes() for p in tmp_path.glob("harmone.db*"))

    raw = await asyncio.to_thread(database_bytes)
    assert raw and PASSWORD.encode() not in raw


# -- store ---------------------------------------------------------------------------------


async def test_store_charger_passwords(store: Store) -> None:
    site = await store.sites.create("S", "cloud")
    assert await store.chargers.verify_password(site.uid, "CP-1", PASSWORD) == "not_set"
    charger_ = await store.chargers.set_password(site.uid, "CP-1", PASSWORD)
    assert charger_.password_set and not charger_.connected  # registered by it
    assert await store.chargers.verify_password(site.uid, "CP-1", PASSWORD) == "ok"
    assert await store.chargers.verify_password(site.uid, "CP-1", PASSWORD + "x") == "wrong"
    assert await store.chargers.verify_password("other", "CP-1", PASSWORD) == "not_set"
    # A registered charger keeps its record when a password is set.
    await store.chargers.register(site.uid, "CP-2")
    await store.chargers.update(site.uid, "CP-2", name="Bay 2")
    updated = await store.chargers.set_password(site.uid, "CP-2", PASSWORD)
    assert updated.name == "Bay 2" and updated.password_set
    assert not (await store.chargers.clear_password(site.uid, "CP-1")).password_set
    assert await store.chargers.verify_password(site.uid, "CP-1", PASSWORD) == "not_set"
    with pytest.raises(ConfigError, match="16 to 40"):
        await store.chargers.set_password(site.uid, "CP-1", "short")
    with pytest.raises(NotFound):
        await store.chargers.set_password("no-site", "CP-1", PASSWORD)
    with pytest.raises(NotFound):
        await store.chargers.clear_password(site.uid, "CP-404")
    assert (await store.sites.update(site.uid, charger_auth=True)).charger_auth
    with pytest.raises(ConfigError, match="true or false"):
        await store.sites.update(site.uid, charger_auth="yes")


# -- pure pieces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("CP-1", "pw:with:colons"), ("CP-1", "pw:with:colons")),
        ("basic " + base64.b64encode(b"a:b").decode(), ("a", "b")),
        (basic("", "x"), ("", "x")),
        (None, "no credentials"),
        ("", "no credentials"),
        ("Digest x", "sent Digest credentials"),
        ("Basic", "malformed"),
        ("Basic " + base64.b64encode(b"no-colon").decode(), "malformed"),
        ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "malformed"),
    ],
)
def test_parse_basic(header: str | None, expected: tuple[str, str] | str) -> None:
    if isinstance(expected, tuple):
        assert parse_basic(header) == expected
        return
    with pytest.raises(Refusal) as info:
        parse_basic(header)
    assert info.value.status == 401 and expected in info.value.reason
    assert ("WWW-Authenticate", CHALLENGE) in info.value.headers


def test_failure_counter_window_and_bounds() -> None:
    now = [0.0]
    counter = FailureCounter(limit=3, window=10.0, clock=lambda: now[0], max_tracked=2)
    key = ("site", "CP-1")
    for t in (0.0, 1.0, 2.0):
        now[0] = t
        assert counter.locked_for(key) is None
        counter.failed(key)
    assert counter.locked_for(key) == pytest.approx(8.0)  # the first failure ages out at 10
    now[0] = 10.0
    assert counter.locked_for(key) is None and counter.count(key) == 2
    counter.succeeded(key)
    assert counter.count(key) == 0
    # Bounded: the stalest charger is forgotten first.
    for name in ("a", "b", "c"):
        counter.failed(("site", name))
    assert len(counter) == 2 and counter.count(("site", "a")) == 0
    assert counter.count(("site", "c")) == 1
