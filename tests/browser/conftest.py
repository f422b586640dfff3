"""Fixtures of the browser tests, which run in one event loop per module (launching Chromium
is the slow part: one browser per module, a fresh context per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from browser_support import CHROMIUM, CHROMIUM_ARGS
from playwright.async_api import Browser, async_playwright
from support import harmone_server

from harmone.web.serve import RunningServer


@pytest_asyncio.fixture(loop_scope="module")
async def srv(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningServer]:
    """tests/conftest.py's `srv`, in the module's event loop (the browser's): a module's
    `SERVER_OPTIONS` are `support.harmone_server`'s keyword arguments. No --public-url by
    default: cloud OCPP URLs point at this very server, so a charger can use them."""
    options: Mapping[str, Any] = getattr(request.module, "SERVER_OPTIONS", {})
    async with harmone_server(tmp_path, **options) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()
