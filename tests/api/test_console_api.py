"""REST endpoints added with the console: users (admins only) and DELETE of a site."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import websockets
from console_support import PASSWORD, api_client
from support import ON_SHARED_SERVER, RawCpms, charger, recv_json, wait_for

from harmone.services.accounts import Accounts
from harmone.web.serve import RunningServer

pytestmark = pytest.mark.usefixtures("cheap_argon2")


@pytest.fixture
async def admin(srv: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    await Accounts(srv.runtime.store).create_account("admin@example.com", PASSWORD, "admin")
    async with await api_client(srv, "admin@example.com") as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def table_admin(shared_srv: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """`admin` on the module's shared server, for the table of refused input (it creates
    nobody, so the cases cannot disturb each other)."""
    await Accounts(shared_srv.runtime.store).create_account("admin@example.com", PASSWORD, "admin")
    async with await api_client(shared_srv, "admin@example.com") as client:
        yield client


async def test_users_crud(srv: RunningServer, admin: httpx.AsyncClient) -> None:
    site = await srv.runtime.store.sites.create("Depot", "cloud")
    r = await admin.post(
        "/api/v1/users",
        json={
            "email": "Op@Example.com",
            "password": PASSWORD,
            "role": "operator",
            "sites": [site.uid],
        },
    )
    assert r.status_code == 201, r.text
    user = r.json()
    assert user["email"] == "op@example.com" and user["sites"] == [site.uid]
    assert set(user) == {"id", "email", "role", "sites", "created_at"}
    listed = (await admin.get("/api/v1/users")).json()
    assert [u["email"] for u in listed] == ["admin@example.com", "op@example.com"]
    assert listed[0]["sites"] is None
    assert (await admin.get(f"/api/v1/users/{user['id']}")).json() == user

    r = await admin.patch(f"/api/v1/users/{user['id']}", json={"role": "viewer", "sites": None})
    assert r.status_code == 200 and r.json()["role"] == "viewer" and r.json()["sites"] is None
    r = await admin.patch(f"/api/v1/users/{user['id']}", json={"password": "a new password"})
    assert r.status_code == 200
    assert (
        await Accounts(srv.runtime.store).authenticate("op@example.com", "a new password")
    ).id == user["id"]
    r = await admin.patch(f"/api/v1/users/{user['id']}", json={"sites": []})
    assert r.json()["sites"] == []  # limited to no site at all, not unrestricted

    assert (await admin.delete(f"/api/v1/users/{user['id']}")).status_code == 204
    assert (await admin.get(f"/api/v1/users/{user['id']}")).status_code == 404
    assert (await admin.delete(f"/api/v1/users/{user['id']}")).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"email": "x@example.com", "password": "short"}, 422, "password"),
        ({"email": "not-an-address", "password": PASSWORD}, 422, "e-mail"),
        ({"email": "x@example.com", "password": PASSWORD, "role": "root"}, 422, "role"),
        (
            {"email": "x@example.com", "password": PASSWORD, "sites": ["nope"]},
            422,
            "no site 'nope'",
        ),
        (
            {"email": "x@example.com", "password": PASSWORD, "role": "admin", "sites": []},
            422,
            "an admin sees every site",
        ),
        ({"email": "admin@example.com", "password": PASSWORD}, 409, "already exists"),
        ({"email": "x@example.com", "password": PASSWORD, "colour": "red"}, 422, "colour"),
    ],
)
@ON_SHARED_SERVER
async def test_user_input_errors(
    table_admin: httpx.AsyncClient, body: dict[str, object], status: int, detail: str
) -> None:
    r = await table_admin.post("/api/v1/users", json=body)
    assert r.status_code == status and detail in r.json()["detail"], r.text
    assert [u["email"] for u in (await table_admin.get("/api/v1/users")).json()] == [
        "admin@example.com"
    ]


async def test_admins_cannot_lock_themselves_out(
    srv: RunningServer, admin: httpx.AsyncClient
) -> None:
    me = (await admin.get("/api/v1/users")).json()[0]
    r = await admin.delete(f"/api/v1/users/{me['id']}")
    assert r.status_code == 409 and "your own account" in r.json()["detail"]
    r = await admin.patch(f"/api/v1/users/{me['id']}", json={"role": "viewer"})
    assert r.status_code == 409 and "your own role" in r.json()["detail"]
    r = await admin.patch(f"/api/v1/users/{me['id']}", json={"role": None})
    assert r.status_code == 422
    # Another admin may demote the first; then the second is the last admin.
    await Accounts(srv.runtime.store).create_account("second@example.com", PASSWORD, "admin")
    async with await api_client(srv, "second@example.com") as second:
        r = await second.patch(f"/api/v1/users/{me['id']}", json={"role": "operator"})
        assert r.status_code == 200
    assert (await admin.get("/api/v1/users")).status_code == 403  # roles apply at once


async def test_users_endpoints_are_in_the_openapi_document(srv: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=srv.url) as anon:
        doc = (await anon.get("/api/v1/openapi.json")).json()
    assert set(doc["paths"]["/api/v1/users"]) == {"get", "post"}
    assert set(doc["paths"]["/api/v1/users/{user_id}"]) == {"get", "patch", "delete"}
    assert "delete" in doc["paths"]["/api/v1/sites/{uid}"]
    assert "sites" in doc["components"]["schemas"]["UserOut"]["properties"]
    assert not any(path.startswith("/sites") or path == "/login" for path in doc["paths"])


async def test_delete_site_closes_its_chargers_and_keeps_the_log(
    srv: RunningServer, admin: httpx.AsyncClient
) -> None:
    async with RawCpms() as cpms:
        keep = (await admin.post("/api/v1/sites", json={"name": "Keep", "type": "cloud"})).json()
        doomed = (
            await admin.post(
                "/api/v1/sites", json={"name": "Doomed", "type": "cloud", "cpms_url": cpms.url}
            )
        ).json()
        base = srv.url.replace("http://", "ws://")
        ws = await charger(f"{base}/{doomed['uid']}/CP-1")
        other = await charger(f"{base}/{keep['uid']}/CP-2")
        await wait_for(lambda: "CP-1" in cpms.conns)
        r = await admin.delete(f"/api/v1/sites/{doomed['uid']}")
        assert r.status_code == 204 and r.content == b""
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv_json(ws)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000, "site deleted")
        await cpms.wait_for(lambda: "CP-1" in cpms.closed)  # its CPMS link is closed too
        assert (await admin.get(f"/api/v1/sites/{doomed['uid']}")).status_code == 404
        assert [s["uid"] for s in (await admin.get("/api/v1/sites")).json()] == [keep["uid"]]
        unknown = (await admin.get("/api/v1/connection-log/unknown-sites")).json()
        assert [a["charge_point_id"] for a in unknown] == ["CP-1"] and unknown[0]["accepted"]
        await other.send('[2,"1","Heartbeat",{}]')
        assert (await recv_json(other))[0] == 3  # the other site's charger is untouched
        await other.close()
        assert (await admin.delete(f"/api/v1/sites/{doomed['uid']}")).status_code == 404
