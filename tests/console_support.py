"""Test support for the web console: an HTTP client that behaves like a browser's cookie jar.

httpx, like Python's cookiejar, never sends a Secure cookie over plain http (browsers make an
exception for loopback), so this client keeps the console's cookies itself.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from harmone import security
from harmone.services.accounts import Accounts
from harmone.web.serve import RunningServer

PASSWORD = "correct horse battery"
SESSION_COOKIE = "__Host-harmone_session"
LOGIN_COOKIE = "__Host-harmone_login"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@contextlib.contextmanager
def cheap_passwords() -> Iterator[None]:
    """Argon2 at its lowest cost, for tests that sign in hundreds of times (each check costs
    ~0.3 s at the production parameters, which stay RFC 9106's defaults)."""
    with pytest.MonkeyPatch.context() as patch:
        cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        patch.setattr(security, "_hasher", cheap)
        security._dummy_hash.cache_clear()  # the unknown-e-mail check hashes with it too
        try:
            yield
        finally:
            security._dummy_hash.cache_clear()


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = _TOKEN.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


class ConsoleClient:
    """A signed-out browser: keeps cookies (Secure ones too), does not follow redirects."""

    def __init__(self, srv: RunningServer) -> None:
        self.srv = srv
        self.http = httpx.AsyncClient(base_url=srv.url, timeout=10, follow_redirects=False)
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    async def __aenter__(self) -> ConsoleClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    def _remember(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0].strip('"')
            if "max-age=0" in header.lower() or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    async def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", None) or {})
        if self.cookies and "cookie" not in {k.lower() for k in headers}:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = await self.http.request(method, url, headers=headers, **kw)
        self._remember(response)
        return response

    async def get(self, url: str, **kw: Any) -> httpx.Response:
        response = await self.request("GET", url, **kw)
        if response.status_code == 200 and "text/html" in response.headers.get("content-type", ""):
            found = _TOKEN.search(response.text)
            if found and self.session:
                self.csrf = found.group(1)
        return response

    async def post(self, url: str, data: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        """A form POST carrying the CSRF token of the signed-in session."""
        fields = {"csrf_token": self.csrf, **(data or {})}
        return await self.request("POST", url, data=fields, **kw)

    @property
    def session(self) -> str | None:
        return self.cookies.get(SESSION_COOKIE)

    async def login(
        self, email: str, password: str = PASSWORD, next_url: str = ""
    ) -> httpx.Response:
        page = await self.get("/login")
        token = csrf_of(page.text)
        response = await self.request(
            "POST",
            "/login",
            data={"email": email, "password": password, "csrf_token": token, "next": next_url},
        )
        if response.status_code == 303 and self.session:
            await self.get("/sites")  # picks up the session's CSRF token
        return response


async def signed_in(
    srv: RunningServer, email: str, role: str = "admin", **kw: Any
) -> ConsoleClient:
    """A client signed in as a new user `email` with `role` (and `sites`, if given)."""
    await Accounts(srv.runtime.store).create_account(email, PASSWORD, role, kw.get("sites"))
    client = ConsoleClient(srv)
    response = await client.login(email)
    assert response.status_code == 303, response.text
    return client


async def api_client(srv: RunningServer, email: str) -> httpx.AsyncClient:
    token = await Accounts(srv.runtime.store).create_token(email)
    return httpx.AsyncClient(
        base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
