"""Test support for the web console: an HTTP client that behaves like a browser's cookie jar.

httpx, like Python's cookiejar, never sends a Secure cookie over plain http (browsers make an
exception for loopback), so this client keeps the console's cookies itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from support import PASSWORD, PATIENCE, api_client

from harmone import security
from harmone.services.accounts import Accounts
from harmone.web.serve import RunningServer

SESSION_COOKIE = "__Host-harmone_session"
LOGIN_COOKIE = "__Host-harmone_login"
__all__ = [
    "BOOT",
    "PASSWORD",
    "ConsoleClient",
    "EventReader",
    "api_client",
    "cheap_passwords",
    "csrf_of",
    "ocpp_base",
    "signed_in",
]

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


#: A 1.6 BootNotification, as a charger sends it.
BOOT = '[2,"b1","BootNotification",{"chargePointVendor":"ACME","chargePointModel":"Wallbox"}]'


def ocpp_base(srv: RunningServer) -> str:
    return srv.url.replace("http://", "ws://")


class EventReader:
    """Reads a text/event-stream response event by event."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self, timeout: float = PATIENCE) -> tuple[str, Any]:
        async def read() -> tuple[str, Any]:
            event, data = "message", None
            async for line in self.lines:
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                elif not line and data is not None:
                    return event, data
            raise AssertionError("stream ended")

        return await asyncio.wait_for(read(), timeout)

    async def until(self, event: str, predicate: Any = None, timeout: float = PATIENCE) -> Any:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            name, data = await self.next(max(0.1, end - loop.time()))
            if name == event and (predicate is None or predicate(data)):
                return data
