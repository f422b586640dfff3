"""Security of the console and the REST API: CSRF, cookie flags, sessions, sign-in rate
limits, role checks on every mutating endpoint, and site restrictions on every read.

The route lists are taken from the application itself, so an endpoint added later (by any
router) is covered without editing this file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from console_support import (
    PASSWORD,
    SESSION_COOKIE,
    ConsoleClient,
    api_client,
    signed_in,
)
from fastapi.routing import APIRoute
from sqlalchemy import select
from support import harmone_server

from harmone.config import ServerConfig
from harmone.errors import NotFound
from harmone.services.accounts import Accounts
from harmone.store.models import ConsoleSessionRow
from harmone.web.app import create_app
from harmone.web.console import (
    routes_auth,
    routes_charger_loadmgmt,
    routes_chargers,
    routes_loadmgmt,
    routes_sites,
    routes_users,
)
from harmone.web.console.ratelimit import LoginLimits, LoginRateLimiter
from harmone.web.serve import RunningServer

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.usefixtures("cheap_argon2")]


def _routes() -> list[tuple[str, str]]:
    """(method, path) of every route: the REST API's from its OpenAPI document (every router,
    whoever wrote it), the console's from its routers (they are not in the document)."""
    app = create_app(ServerConfig(db_url="sqlite://"), lambda: "ws://127.0.0.1:1")
    out = [
        (method.upper(), path)
        for path, item in app.api.openapi()["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]
    console = (
        routes_auth,
        routes_sites,
        routes_chargers,
        routes_charger_loadmgmt,
        routes_loadmgmt,
        routes_users,
    )
    for module in console:
        for route in module.router.routes:
            assert isinstance(route, APIRoute)
            out.extend((m, route.path) for m in sorted(route.methods - {"HEAD"}))
    return out


ROUTES = _routes()
API_MUTATING = sorted(
    (m, p) for m, p in ROUTES if p.startswith("/api/") and m in ("POST", "PUT", "PATCH", "DELETE")
)
API_SITE_READS = sorted(
    p for m, p in ROUTES if m == "GET" and p.startswith("/api/") and "{uid}" in p
)
#: GET routes of the OpenAPI document outside /api/ (the Prometheus metrics): every site's
#: numbers, for a token or a session of a user who may see every site.
OPENAPI_READS_OUTSIDE_API = sorted(
    path
    for path, item in create_app(ServerConfig(db_url="sqlite://"), lambda: "ws://127.0.0.1:1")
    .api.openapi()["paths"]
    .items()
    if "get" in item and not path.startswith("/api/")
)
CONSOLE_POSTS = sorted(p for m, p in ROUTES if m == "POST" and not p.startswith("/api/"))
#: Forms of a signed-in user (the sign-in form has its own protection, tested below).
CONSOLE_FORMS = [p for p in CONSOLE_POSTS if p != "/login"]
CONSOLE_SITE_PAGES = sorted(
    p for m, p in ROUTES if m == "GET" and not p.startswith("/api/") and "{uid}" in p
)


async def test_the_route_lists_are_not_empty() -> None:
    assert ("DELETE", "/api/v1/sites/{uid}") in API_MUTATING
    assert ("POST", "/api/v1/users") in API_MUTATING
    assert "/sites/{uid}/settings" in CONSOLE_POSTS and "/logout" in CONSOLE_POSTS
    assert "/api/v1/sites/{uid}/chargers/{charger_id}/frames" in API_SITE_READS
    # routes added with the sites and chargers services and the live connection log
    assert ("DELETE", "/api/v1/sites/{uid}/chargers/{charger_id}/password") in API_MUTATING
    assert "/sites/{uid}/connection-log/events" in CONSOLE_SITE_PAGES
    assert "/metrics" in OPENAPI_READS_OUTSIDE_API


def fill(path: str, **values: str) -> str:
    """`path` with its {parameters} replaced; unknown ones get a harmless placeholder."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x1"), path)


@dataclass
class Env:
    srv: RunningServer
    site_a: str  # the site restricted users may see
    site_b: str  # ... and the one they may not
    other_user: int
    clients: dict[str, httpx.AsyncClient]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    async with harmone_server(tmp_path_factory.mktemp("security")) as srv:
        store = srv.runtime.store
        a = await store.sites.create("A", "cloud")
        b = await store.sites.create("B", "cloud")
        for site in (a, b):
            await store.chargers.register(site.uid, "CP-1")
        roles = {
            "admin": ("admin", None),
            "operator": ("operator", None),
            "viewer": ("viewer", None),
            "restricted-operator": ("operator", [a.uid]),
            "restricted-viewer": ("viewer", [a.uid]),
        }
        clients = {}
        for name, (role, sites) in roles.items():
            await Accounts(store).create_account(f"{name}@example.com", PASSWORD, role, sites)
            clients[name] = await api_client(srv, f"{name}@example.com")
        clients["anonymous"] = httpx.AsyncClient(base_url=srv.url, timeout=10)
        other = await Accounts(store).create_account("bystander@example.com", PASSWORD, "viewer")
        try:
            yield Env(srv, a.uid, b.uid, other.user.id, clients)
        finally:
            for client in clients.values():
                await client.aclose()


# -- roles on every mutating API endpoint ----------------------------------------------------

# A body that never validates: an allowed caller gets 422 (or 404 for a missing target), so no
# case changes anything, and 401/403 can only come from the access checks.
INVALID_BODY = {"__not_a_field__": 1}


@pytest.mark.parametrize(("method", "path"), API_MUTATING)
@pytest.mark.parametrize(
    "role", ["anonymous", "viewer", "restricted-viewer", "operator", "restricted-operator", "admin"]
)
async def test_role_checks_on_every_mutating_endpoint(
    env: Env, role: str, method: str, path: str
) -> None:
    targets = {"charger_id": "CP-1", "node_id": "n1", "user_id": str(env.other_user)}
    url = fill(path, uid=env.site_b, **targets)
    if method == "DELETE":  # a target that does not exist: allowed callers get 404
        url = fill(path, **{**targets, "uid": "no-such-site", "user_id": "999999"})
    r = await env.clients[role].request(method, url, json=INVALID_BODY)
    users_route = path.startswith("/api/v1/users")
    if role == "anonymous":
        assert r.status_code == 401, r.text
    elif role in ("viewer", "restricted-viewer") and not (
        role == "restricted-viewer" and "{uid}" in path
    ):
        assert r.status_code == 403, r.text
    elif role.startswith("restricted") and "{uid}" in path:
        # Another site does not exist for them: 404, exactly as for an unknown UID.
        assert r.status_code == 404, r.text
        assert r.json()["detail"] == f"no site {url.split('/')[4]!r}"
    elif users_route and role != "admin":
        assert r.status_code == 403, r.text
    elif role == "restricted-operator" and path == "/api/v1/sites":
        assert r.status_code == 403 and "limited to some sites" in r.json()["detail"]
    else:
        assert r.status_code not in (401, 403) and r.status_code < 500, r.text
    assert "detail" in r.json()


@pytest.mark.parametrize(
    ("method", "path"), [(m, p) for m, p in API_MUTATING if "{uid}" in p and m != "DELETE"]
)
async def test_a_restricted_operator_may_change_their_own_sites(
    env: Env, method: str, path: str
) -> None:
    url = fill(path, uid=env.site_a, charger_id="CP-1", node_id="n1")
    r = await env.clients["restricted-operator"].request(method, url, json=INVALID_BODY)
    assert r.status_code == 422, r.text


async def test_a_restricted_operator_deletes_their_own_site_but_not_another(env: Env) -> None:
    store = env.srv.runtime.store
    op = env.clients["restricted-operator"]
    extra = await store.sites.create("Extra", "cloud")
    assert (await op.delete(f"/api/v1/sites/{extra.uid}")).status_code == 404
    account = await Accounts(store).get_account(
        next(
            a.user.id
            for a in await Accounts(store).list_accounts()
            if a.user.email.startswith("restricted-op")
        )
    )
    await Accounts(store).update_account(account.user.id, sites=[env.site_a, extra.uid])
    assert (await op.delete(f"/api/v1/sites/{extra.uid}")).status_code == 204
    assert await store.sites.find(extra.uid) is None
    assert (await Accounts(store).get_account(account.user.id)).sites == frozenset({env.site_a})


# -- site restrictions on reads ---------------------------------------------------------------


async def test_a_restricted_user_only_sees_their_sites_in_lists(env: Env) -> None:
    for role in ("restricted-viewer", "restricted-operator"):
        sites = (await env.clients[role].get("/api/v1/sites")).json()
        assert [s["uid"] for s in sites] == [env.site_a]
    everyone = (await env.clients["viewer"].get("/api/v1/sites")).json()
    assert {s["uid"] for s in everyone} == {env.site_a, env.site_b}
    r = await env.clients["restricted-viewer"].get("/api/v1/connection-log/unknown-sites")
    assert r.status_code == 403


@pytest.mark.parametrize("path", OPENAPI_READS_OUTSIDE_API)
@pytest.mark.parametrize(
    ("role", "status"),
    [
        ("anonymous", 401),
        ("restricted-viewer", 403),
        ("restricted-operator", 403),
        ("viewer", 200),
        ("operator", 200),
        ("admin", 200),
    ],
)
async def test_reads_of_every_site_need_a_user_of_every_site(
    env: Env, path: str, role: str, status: int
) -> None:
    r = await env.clients[role].get(path)
    assert r.status_code == status, r.text
    if status != 200:
        assert r.json()["detail"]
        assert env.site_a not in r.text and env.site_b not in r.text


@pytest.mark.parametrize("path", API_SITE_READS)
async def test_a_restricted_user_cannot_read_another_site(env: Env, path: str) -> None:
    viewer = env.clients["restricted-viewer"]
    other = await viewer.get(fill(path, uid=env.site_b, charger_id="CP-1"))
    assert other.status_code == 404, other.text
    assert other.json() == {"detail": f"no site {env.site_b!r}"}
    # ... exactly what a UID that does not exist answers.
    missing = await viewer.get(fill(path, uid="nope", charger_id="CP-1"))
    assert missing.json() == {"detail": "no site 'nope'"}


@pytest.mark.parametrize("path", CONSOLE_SITE_PAGES)
async def test_console_pages_of_another_site_are_not_found(env: Env, path: str) -> None:
    async with await signed_in(
        env.srv, f"pages-{abs(hash(path))}@example.com", "operator", sites=[env.site_a]
    ) as browser:
        r = await browser.get(fill(path, uid=env.site_b, charger_id="CP-1"))
        assert r.status_code == 404
        if not path.endswith("/events"):  # streams never end; tested in test_console_pages
            own = await browser.get(fill(path, uid=env.site_a, charger_id="CP-1"))
            assert own.status_code in (200, 303)


# -- CSRF ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONSOLE_FORMS)
async def test_every_console_form_refuses_requests_without_a_valid_csrf_token(
    env: Env, path: str
) -> None:
    store = env.srv.runtime.store
    async with await signed_in(env.srv, f"csrf-{abs(hash(path))}@example.com") as browser:
        url = fill(path, uid=env.site_b, charger_id="CP-1", user_id=str(env.other_user))
        fields = {"name": "Hijacked", "type": "cloud", "email": "evil@example.com"}
        fields |= {"password": "12345678", "role": "admin", "cpms_mode": "site"}
        attempts = [
            {"data": fields},  # no token
            {"data": {**fields, "csrf_token": "forged"}},
            {
                "data": {**fields, "csrf_token": browser.csrf},
                "headers": {"Origin": "https://evil.example"},
            },
            {
                "data": {**fields, "csrf_token": browser.csrf},
                "headers": {"Sec-Fetch-Site": "cross-site"},
            },
        ]
        for attempt in attempts:
            r = await browser.request("POST", url, **attempt)
            assert r.status_code == 403, (attempt, r.text)
            assert "refused" in r.text
        assert (await store.sites.get(env.site_b)).name == "B"
        assert (await store.chargers.get(env.site_b, "CP-1")).name is None
        with pytest.raises(NotFound):  # no load management was set up either
            env.srv.runtime.loadmgmt.config(env.site_b)
        assert not [
            a for a in await Accounts(store).list_accounts() if a.user.email == "evil@example.com"
        ]
        assert (await browser.get("/sites")).status_code == 200  # still signed in


async def test_a_token_from_another_session_is_refused(env: Env) -> None:
    async with (
        await signed_in(env.srv, "first@example.com") as first,
        await signed_in(env.srv, "second@example.com") as second,
    ):
        assert first.csrf != second.csrf
        r = await first.request(
            "POST",
            f"/sites/{env.site_b}/settings",
            data={"csrf_token": second.csrf, "name": "X", "type": "cloud"},
        )
        assert r.status_code == 403
        # The right token, same origin: accepted.
        r = await first.post(f"/sites/{env.site_b}/settings", {"name": "B", "type": "cloud"})
        assert r.status_code == 303


async def test_the_sign_in_form_is_protected_against_login_csrf(env: Env) -> None:
    await Accounts(env.srv.runtime.store).create_account("victim@example.com", PASSWORD, "viewer")
    async with ConsoleClient(env.srv) as browser:
        form = {"email": "victim@example.com", "password": PASSWORD, "next": "/sites"}
        r = await browser.request("POST", "/login", data=form)  # no token, no cookie
        assert r.status_code == 403 and browser.session is None
        await browser.get("/login")
        r = await browser.request("POST", "/login", data={**form, "csrf_token": "forged"})
        assert r.status_code == 403 and browser.session is None
        page = await browser.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token
        r = await browser.request(
            "POST",
            "/login",
            data={**form, "csrf_token": token.group(1)},
            headers={"Origin": "https://evil.example"},
        )
        assert r.status_code == 403 and browser.session is None


# -- cookies and sessions ------------------------------------------------------------------


async def test_cookie_flags(env: Env) -> None:
    await Accounts(env.srv.runtime.store).create_account("cookies@example.com", PASSWORD, "viewer")
    async with ConsoleClient(env.srv) as browser:
        page = await browser.get("/login")
        login_cookie = page.headers["set-cookie"]
        assert login_cookie.startswith("__Host-harmone_login=")
        for flag in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
            assert flag in login_cookie
        r = await browser.login("cookies@example.com")
        cookies = r.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith(f"{SESSION_COOKIE}="))
        for flag in ("Secure", "HttpOnly", "SameSite=lax", "Path=/"):
            assert flag in session, session
        assert "domain" not in session.lower() and "max-age" not in session.lower()
        r = await browser.post("/logout")
        assert r.status_code == 303
        cleared = next(c for c in r.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
        assert "Max-Age=0" in cleared and "Secure" in cleared


async def test_only_a_hash_of_the_session_id_is_stored_and_logout_ends_it(env: Env) -> None:
    store = env.srv.runtime.store
    async with await signed_in(env.srv, "hash@example.com", "viewer") as browser:
        session_id = browser.session
        assert session_id and len(session_id) >= 43
        async with store.engine.connect() as conn:
            hashes = set((await conn.execute(select(ConsoleSessionRow.id_hash))).scalars())
        assert session_id not in hashes
        assert hashlib.sha256(session_id.encode()).hexdigest() in hashes
        stolen = dict(browser.cookies)
        await browser.post("/logout")
        browser.cookies = stolen  # replaying the old cookie does not work any more
        r = await browser.get("/sites")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


async def test_pages_and_events_need_a_session(env: Env) -> None:
    async with ConsoleClient(env.srv) as browser:
        r = await browser.get(f"/sites/{env.site_a}/chargers?x=1")
        assert r.status_code == 303
        assert (
            r.headers["location"] == "/login?next=%2Fsites%2F" + env.site_a + "%2Fchargers%3Fx%3D1"
        )
        # An event stream without a session: 204 tells EventSource to stop retrying.
        assert (await browser.get(f"/sites/{env.site_a}/events")).status_code == 204
        browser.cookies[SESSION_COOKIE] = "forged-session-id"
        assert (await browser.get("/users")).status_code == 303


async def test_sign_in_never_redirects_off_site(env: Env) -> None:
    await Accounts(env.srv.runtime.store).create_account("redirect@example.com", PASSWORD, "viewer")
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example", "/login"):
        async with ConsoleClient(env.srv) as browser:
            r = await browser.login("redirect@example.com", next_url=target)
            assert r.headers["location"] == "/sites", target


async def test_roles_on_console_pages(env: Env) -> None:
    async with await signed_in(env.srv, "pages-viewer@example.com", "viewer") as viewer:
        for url in (
            "/sites/new",
            f"/sites/{env.site_a}/settings",
            f"/sites/{env.site_a}/delete",
            "/users",
        ):
            assert (await viewer.get(url)).status_code == 403, url
    async with await signed_in(env.srv, "pages-operator@example.com", "operator") as operator:
        assert (await operator.get("/sites/new")).status_code == 200
        assert (await operator.get("/users")).status_code == 403
        r = await operator.post(
            "/users", {"email": "x@example.com", "password": PASSWORD, "role": "admin"}
        )
        assert r.status_code == 403


async def test_security_headers_on_pages(env: Env) -> None:
    async with ConsoleClient(env.srv) as browser:
        r = await browser.get("/login")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
        static = await browser.get("/static/console.css")
        assert static.status_code == 200 and "max-age" in static.headers["cache-control"]
        api = await env.clients["admin"].get("/api/v1/sites")
        assert "content-security-policy" not in api.headers  # Swagger UI keeps working


# -- sign-in rate limits ---------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def fresh(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with harmone_server(tmp_path) as srv:
        yield srv


async def test_sign_in_is_rate_limited_per_email(fresh: RunningServer) -> None:
    await Accounts(fresh.runtime.store).create_account("target@example.com", PASSWORD, "operator")
    await Accounts(fresh.runtime.store).create_account("other@example.com", PASSWORD, "operator")
    async with ConsoleClient(fresh) as browser:
        for _ in range(5):
            r = await browser.login("target@example.com", "guess-guess")
            assert r.status_code == 401 and "Wrong e-mail address or password" in r.text
        r = await browser.login("Target@Example.com", PASSWORD)  # even the right password
        assert r.status_code == 429 and browser.session is None
        assert "Too many failed sign-in attempts. Try again in 5 minutes." in r.text
        assert 0 < int(r.headers["retry-after"]) <= 300
        r = await browser.login("other@example.com", PASSWORD)  # others are not locked out
        assert r.status_code == 303


async def test_sign_in_is_rate_limited_per_address(fresh: RunningServer) -> None:
    await Accounts(fresh.runtime.store).create_account("late@example.com", PASSWORD, "operator")
    async with ConsoleClient(fresh) as browser:
        for i in range(20):
            r = await browser.login(f"nobody{i}@example.com", "guess-guess")
            assert r.status_code == 401
        r = await browser.login("late@example.com", PASSWORD)
        assert r.status_code == 429


async def test_rate_limiter_window_and_success() -> None:
    now = [1000.0]
    limiter = LoginRateLimiter(LoginLimits(per_email=3, per_address=5, window=60), lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("a@x", "1.2.3.4") == 0
        limiter.failed("a@x", "1.2.3.4")
        now[0] += 1
    assert limiter.retry_after("A@X ", "9.9.9.9") == pytest.approx(57)
    now[0] += 57
    assert limiter.retry_after("a@x", "9.9.9.9") == 0  # the oldest failure left the window
    for _ in range(3):
        limiter.failed("b@x", "1.2.3.4")
    assert limiter.retry_after("c@x", "1.2.3.4") > 0  # 5 failures from this address
    limiter.succeeded("b@x")
    assert limiter.retry_after("b@x", "5.5.5.5") == 0
    assert LoginRateLimiter.describe(30.2) == "Try again in 31 seconds."
    assert LoginRateLimiter.describe(240) == "Try again in 4 minutes."


async def test_rate_limiter_memory_is_bounded() -> None:
    limiter = LoginRateLimiter(LoginLimits(max_keys=50))
    for i in range(500):
        limiter.failed(f"user{i}@x", f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._failures) <= 51
