"""Test support for the browser tests: Debian's Chromium, driven by Playwright, and screenshots.

Chromium is never downloaded: the tests use /usr/bin/chromium (scripts/test installs Debian's
package) and are skipped when it is missing, unless the run is strict (`support.strict_run`:
$HARMONE_TEST_STRICT=1, or $CI set). The `srv` and `browser` fixtures of these tests are in
tests/browser/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page
from support import strict_run

CHROMIUM = Path("/usr/bin/chromium")
#: Screenshots of every page, for a person to look at (not committed).
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
#: Chromium's switches: no sandbox (tests may run as root), nothing that goes online.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> None:
    """Called at a browser test module's top: skips the module (fails a strict run) without
    Chromium."""
    if not CHROMIUM.exists():
        if strict_run():
            raise RuntimeError(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True, animations="disabled")
