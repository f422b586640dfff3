"""The onboarding guide for a gateway site, in a real browser (Debian's Chromium, Playwright).

Sign in to the cloud console, create a gateway site, copy its OCPP URL from the Control Hub,
pair a box with the command the Control Hub shows, connect a simulated charger to exactly
that URL on the box, and find it online on the cloud's Charging stations tab, with the box's
health on the Control Hub. Skipped without /usr/bin/chromium unless the run is strict.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from console_support import cheap_passwords
from gateway_support import box, box_config, free_port, trust
from playwright.async_api import Browser, async_playwright, expect
from support import PATIENCE, harmone_server, strict_run

from harmone.services.accounts import Accounts
from harmone.sim.charger import SimulatedCharger

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
PASSWORD = "correct horse battery"

pytestmark = pytest.mark.asyncio(loop_scope="module")

if not CHROMIUM.exists():
    if strict_run():
        raise RuntimeError(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)


@pytest.fixture(scope="module", autouse=True)
def _cheap_passwords() -> Iterator[None]:
    with cheap_passwords():
        yield


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def test_the_guide_for_a_gateway_site_end_to_end(tmp_path: Path, browser: Browser) -> None:
    (tmp_path / "cloud").mkdir()
    async with harmone_server(tmp_path / "cloud") as srv:
        await Accounts(srv.runtime.store).create_user("support@example.com", PASSWORD, "admin")
        context = await browser.new_context(
            base_url=srv.url, viewport={"width": 1360, "height": 900}
        )
        context.set_default_timeout(10_000)
        page = await context.new_page()
        await page.goto("/login")
        await page.get_by_label("E-mail address").fill("support@example.com")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", name="Sites", exact=True)).to_be_visible()

        # A gateway site whose box answers on the LAN at 127.0.0.1:port.
        box_port = free_port()
        await page.get_by_role("link", name="New site").click()
        await page.get_by_label("Name").fill("Depot Süd")
        await page.get_by_text("Gateway / Flexbox", exact=True).click()
        await page.get_by_label("Gateway / Flexbox LAN address").fill(f"127.0.0.1:{box_port}")
        await page.get_by_role("button", name="Create site").click()
        await expect(page.get_by_role("heading", name="OCPP URL")).to_be_visible()
        uid = page.url.split("/sites/")[1].split("/")[0]
        shown = await page.get_by_label("OCPP URL of Depot Süd").input_value()
        assert shown == f"wss://127.0.0.1:{box_port}/{uid}"

        # Pair a box: the Control Hub shows the one line to run on it.
        await page.get_by_role("button", name="Pair a box").click()
        command = await page.get_by_label("Pairing command").input_value()
        found = re.fullmatch(r"harmone gateway --cloud (\S+) --pair (\S+) --db box.db", command)
        assert found, command
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "gateway-01-pairing.png"), full_page=True)
        async with box(box_config(tmp_path, found.group(1), found.group(2))) as b:
            # Support watches the cloud's Charging stations tab while the installer puts the
            # copied URL into the charger, which connects to the box: it appears live.
            await page.goto(f"/sites/{uid}/chargers")
            await expect(page.get_by_text("No charging station has connected yet")).to_be_visible()
            await page.evaluate("window.__sameDocument = true")
            sim = SimulatedCharger(shown, "GW-7", ssl_context=trust(b))
            await sim.connect()
            await sim.boot()
            await sim.status(1, "Available")
            row = page.locator('tr[data-id="GW-7"]')
            await expect(row.get_by_text("Online")).to_be_visible(timeout=PATIENCE * 1000)
            assert await page.evaluate("window.__sameDocument === true")
            await expect(row.get_by_text("#1 Available")).to_be_visible()
            await page.screenshot(path=str(SHOTS / "gateway-02-stations.png"), full_page=True)
            # Its page: the box's frames in the cloud's message inspector, new ones live.
            charger_page = await context.new_page()
            await charger_page.goto(f"/sites/{uid}/chargers/GW-7")
            inspector = charger_page.locator("#inspector")
            await expect(
                inspector.locator('li[data-action="BootNotification"]').first
            ).to_be_visible(timeout=PATIENCE * 1000)
            await sim.heartbeat()
            await expect(inspector.locator('li[data-action="Heartbeat"]').first).to_be_visible(
                timeout=PATIENCE * 1000
            )
            await charger_page.close()
            # ... and the box's health on the Control Hub.
            await page.goto(f"/sites/{uid}/control-hub")
            health = page.locator("#gateway-health")
            await expect(health.get_by_text("Online")).to_be_visible()
            await expect(health).to_contain_text(b.fingerprint)
            await page.screenshot(path=str(SHOTS / "gateway-03-health.png"), full_page=True)
            await sim.close()
        await context.close()
