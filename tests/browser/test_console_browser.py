"""The console in a real browser: Debian's Chromium driven by Playwright.

The support guide, end to end: sign in, create a site, copy the OCPP URL from the Control
Hub, connect a simulated charger to exactly that URL, watch it come online without
reloading, find its BootNotification in the message inspector, disconnect it and watch it go
offline. Plus: a wrong password, and a viewer who cannot change anything.

Screenshots of every page go to artifacts/screenshots/ (not committed) for a person to look
at. Chromium is never downloaded: the tests use /usr/bin/chromium (scripts/test installs
Debian's package) and are skipped when it is missing, unless the run is strict
(`support.strict_run`: $HARMONE_TEST_STRICT=1, or $CI set).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser_support import require_chromium, shot
from console_support import api_client
from playwright.async_api import Browser, BrowserContext, Page, expect
from support import PASSWORD, harmone_server
from websockets.exceptions import InvalidStatus

from harmone.services.accounts import Accounts
from harmone.sim.charger import SimulatedCharger
from harmone.sim.cpms import SimulatedCpms
from harmone.web.serve import RunningServer

TIMEOUT = 10_000  # ms, for anything that waits on the server

# One browser for the module (launching it is the slow part); a fresh context per test.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.usefixtures("cheap_argon2")]

require_chromium()


async def new_context(browser: Browser, srv: RunningServer, **kw: object) -> BrowserContext:
    context = await browser.new_context(
        base_url=srv.url,
        viewport={"width": 1360, "height": 900},
        permissions=["clipboard-read", "clipboard-write"],
        **kw,  # type: ignore[arg-type]
    )
    context.set_default_timeout(TIMEOUT)
    return context


async def sign_in(page: Page, email: str, password: str = PASSWORD) -> None:
    await page.goto("/login")
    await page.get_by_label("E-mail address").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def test_support_guide_end_to_end(srv: RunningServer, browser: Browser) -> None:
    store = srv.runtime.store
    await Accounts(store).create_user("support@example.com", PASSWORD, role="admin")
    async with SimulatedCpms() as cpms:
        context = await new_context(browser, srv)
        page = await context.new_page()

        # Signing in lands on the sites list (after being sent to the sign-in page).
        await page.goto("/sites")
        await expect(page).to_have_url(re.compile(r"/login\?next="))
        await shot(page, "01-login")
        await page.get_by_label("E-mail address").fill("support@example.com")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", name="Sites", exact=True)).to_be_visible()
        cookie = next(c for c in await context.cookies() if c["name"] == "__Host-harmone_session")
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Lax"

        # Create a cloud site whose chargers are relayed to a CPMS.
        await page.get_by_role("link", name="New site").click()
        await page.get_by_label("Name").fill("Depot Nord")
        await page.get_by_label("CPMS URL").fill(cpms.url + "/ocpp")
        await shot(page, "02-new-site")
        await page.get_by_role("button", name="Create site").click()

        # Control Hub: the OCPP URL is exactly the API's, and Copy puts it on the clipboard.
        await expect(page.get_by_role("heading", name="OCPP URL")).to_be_visible()
        uid = page.url.split("/sites/")[1].split("/")[0]
        field = page.get_by_label("OCPP URL of Depot Nord")
        shown = await field.input_value()
        async with await api_client(srv, "support@example.com") as api:
            assert shown == (await api.get(f"/api/v1/sites/{uid}")).json()["ocpp_url"]
        assert await field.get_attribute("readonly") is not None
        await page.get_by_role("button", name="Copy").click()
        await expect(page.get_by_role("button", name="Copied")).to_be_visible()
        assert await page.evaluate("navigator.clipboard.readText()") == shown
        # Without --public-url the URL is this server's own address: the page says so.
        port = srv.url.rsplit(":", 1)[1]
        assert shown == f"ws://127.0.0.1:{port}/{uid}"
        await expect(page.locator("p.format")).to_have_text(
            f"URL format: ws://127.0.0.1:{port}/{{site-UID}}"
        )
        await expect(page.locator("#local-only")).to_contain_text(
            "Only this machine can reach this URL"
        )
        await expect(page.get_by_text(f"plain WebSocket, port {port}")).to_be_visible()
        await expect(page.get_by_text("Central System URL")).to_be_visible()
        await shot(page, "03-control-hub")

        # Charging stations tab, live: the charger appears online without a reload.
        tabs = page.get_by_role("navigation", name="Site")
        await tabs.get_by_role("link", name=re.compile("^Charging stations")).click()
        await expect(page.get_by_text("No charging station has connected yet")).to_be_visible()
        await expect(page.locator("[data-live-text]")).to_have_text("Live")
        await page.evaluate("window.__sameDocument = true")
        sim = SimulatedCharger(shown, "CP-42", connectors=2)
        await sim.connect()
        await sim.boot()
        await sim.status(1, "Available")
        await sim.status(2, "Charging")
        row = page.locator('tr[data-id="CP-42"]')
        await expect(row.get_by_text("Online")).to_be_visible()
        await expect(row.get_by_text("SimCharger")).to_be_visible()
        await expect(row.get_by_text("#2 Charging")).to_be_visible()
        await expect(row.get_by_text("Connected")).to_be_visible()  # its CPMS link
        await expect(row.get_by_text(re.compile(r"\d+ s ago"))).to_be_visible()
        await expect(row.locator(".chip.ok")).to_have_text("#1 Available")
        badge = tabs.locator("[data-charger-count]")
        await expect(badge).to_have_text("1 / 1")
        assert await page.evaluate("window.__sameDocument === true")
        await shot(page, "04-charging-stations")

        # Its page, in a second tab: the BootNotification is in the inspector.
        charger_page = await context.new_page()
        await charger_page.goto(f"/sites/{uid}/chargers/CP-42")
        inspector = charger_page.locator("#inspector")
        boot = inspector.locator('li[data-action="BootNotification"]')
        await expect(boot.first).to_be_visible()
        await expect(boot.locator(".party.charger").first).to_be_visible()
        await expect(charger_page.locator("#inspector-action")).to_contain_text("BootNotification")
        call = boot.last  # newest first: the call is below its answer
        await expect(call.locator(".kind")).to_have_text("Call")
        await call.locator("summary").click()
        await expect(call.locator("pre")).to_contain_text('"chargePointVendor": "HARMON-E"')
        await expect(charger_page.get_by_text("Inherits the site's CPMS")).to_be_visible()
        await charger_page.evaluate("window.__sameDocument = true")
        # New frames arrive live; pausing holds them back until resumed.
        await sim.heartbeat()
        await expect(inspector.locator('li[data-action="Heartbeat"]').first).to_be_visible()
        await charger_page.get_by_role("button", name="Pause").click()
        await sim.status(1, "Preparing")
        await expect(charger_page.locator("#inspector-status")).to_contain_text("2 new messages")
        await charger_page.get_by_role("button", name="Resume").click()
        await expect(inspector.get_by_text('"Preparing"').first).to_be_attached()
        await charger_page.locator("#inspector-action").select_option("BootNotification")
        assert await inspector.locator("li.frame:visible").count() == 2  # call and result
        await charger_page.locator("#inspector-action").select_option("")
        await shot(charger_page, "05-charging-station")

        # Disconnect: both open pages show it offline, still without a reload, its connectors
        # as last known (not a green "Available"), and the tab badge counts online / total.
        await sim.close()
        await expect(row.get_by_text("Offline")).to_be_visible()
        await expect(charger_page.locator(".status-strip").get_by_text("Offline")).to_be_visible()
        await expect(row.locator(".chip.ok")).to_have_count(0)
        await expect(row.locator(".chip.stale").first).to_have_text("#1 Preparing (last known)")
        await expect(charger_page.locator(".chip.stale").first).to_contain_text("(last known)")
        await expect(badge).to_have_text("0 / 1")
        assert await page.evaluate("window.__sameDocument === true")
        assert await charger_page.evaluate("window.__sameDocument === true")
        await shot(page, "06-charging-stations-offline")

        # The connection log lists the attempt, and new ones as they happen (no reload).
        await tabs.get_by_role("link", name="Connection log").click()
        await expect(page.locator("table.log").get_by_text("CP-42").first).to_be_visible()
        await expect(page.locator("[data-live-text]")).to_have_text("Live")
        await page.evaluate("window.__sameDocument = true")
        refused = SimulatedCharger(shown, "CP-OLD", subprotocols=["ocpp1.5"])
        with pytest.raises(InvalidStatus):
            await refused.connect()
        first_row = page.locator("table.log tbody tr").first
        await expect(first_row).to_contain_text("CP-OLD")
        await expect(first_row).to_contain_text("Refused")
        assert await page.evaluate("window.__sameDocument === true")
        await shot(page, "07-connection-log")
        await tabs.get_by_role("link", name="Settings").click()
        await shot(page, "08-site-settings")
        await page.get_by_role("link", name="Users").click()
        await page.get_by_role("link", name="New user").click()
        await page.get_by_label("E-mail address").fill("viewer@example.com")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_text("Viewer", exact=True).click()
        await page.get_by_text("Only these sites").click()
        await page.get_by_label("Depot Nord").check()
        await shot(page, "09-new-user")
        await page.get_by_role("button", name="Create user").click()
        await expect(page.get_by_text("User created.")).to_be_visible()
        await shot(page, "10-users")
        account = next(a for a in await Accounts(store).list_accounts() if a.user.role == "viewer")
        assert account.sites == frozenset({uid})

        # A phone-sized Control Hub.
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.goto(f"/sites/{uid}/control-hub")
        await expect(page.get_by_role("button", name="Copy")).to_be_visible()
        await shot(page, "11-control-hub-phone")
        await page.goto(f"/sites/{uid}/chargers")
        await expect(page.locator('tr[data-id="CP-42"]')).to_be_visible()
        await shot(page, "12-charging-stations-phone")
        await context.close()


async def test_wrong_password_gets_a_clear_message(srv: RunningServer, browser: Browser) -> None:
    await Accounts(srv.runtime.store).create_user("op@example.com", PASSWORD, role="operator")
    context = await new_context(browser, srv)
    page = await context.new_page()
    await sign_in(page, "op@example.com", "not the password")
    alert = page.get_by_role("alert")
    await expect(alert).to_have_text("Wrong e-mail address or password. Check both and try again.")
    await expect(page.get_by_label("E-mail address")).to_have_value("op@example.com")
    await expect(page.get_by_label("Password")).to_be_focused()
    await shot(page, "13-wrong-password")
    assert not [c for c in await context.cookies() if c["name"] == "__Host-harmone_session"]
    await context.close()


async def test_viewer_sees_only_their_sites_and_cannot_edit(
    srv: RunningServer, browser: Browser
) -> None:
    store = srv.runtime.store
    mine = await store.sites.create("Visible depot", "gateway", gateway_host="192.168.1.10")
    other = await store.sites.create("Hidden depot", "cloud")
    await store.chargers.register(mine.uid, "CP-1")
    await Accounts(store).create_account("viewer@example.com", PASSWORD, "viewer", [mine.uid])
    context = await new_context(browser, srv)
    page = await context.new_page()
    await sign_in(page, "viewer@example.com")
    await expect(page.get_by_role("link", name="Visible depot")).to_be_visible()
    await expect(page.get_by_text("Hidden depot")).to_have_count(0)
    await expect(page.get_by_role("link", name="New site")).to_have_count(0)
    await expect(page.get_by_role("link", name="Users")).to_have_count(0)
    await shot(page, "14-viewer-sites")

    await page.get_by_role("link", name="Visible depot").click()
    await expect(page.get_by_label("OCPP URL of Visible depot")).to_have_value(
        f"wss://192.168.1.10/{mine.uid}"
    )
    await expect(page.get_by_text("wss://{gateway-or-flexbox-IP}/{site-UID}")).to_be_visible()
    await expect(page.get_by_role("link", name="Settings")).to_have_count(0)
    await shot(page, "15-viewer-control-hub")
    await page.goto(f"/sites/{mine.uid}/chargers/CP-1")
    await expect(page.get_by_role("heading", name="Message inspector")).to_be_visible()
    await expect(page.locator("form input[name=cpms_url]")).to_have_count(0)
    await expect(page.get_by_role("button", name="Save")).to_have_count(0)
    await shot(page, "16-viewer-charging-station")

    # Even with a valid session and CSRF token, the server refuses the viewer's changes.
    token = await page.locator("input[name=csrf_token]").first.input_value()
    statuses = await page.evaluate(
        """async ([uid, token]) => {
            const post = (url, fields) => fetch(url, {method: "POST", body: new URLSearchParams(
                {csrf_token: token, ...fields}), redirect: "manual"}).then(r => r.status);
            return [
                await post(`/sites/${uid}/settings`, {name: "Renamed", type: "cloud"}),
                await post("/sites", {name: "New", type: "cloud"}),
                await post(`/sites/${uid}/chargers/CP-1`, {name: "x", cpms_mode: "site"}),
                await post(`/sites/${uid}/delete`, {}),
                await post("/users", {email: "x@example.com", password: "12345678", role: "admin"}),
            ];
        }""",
        [mine.uid, token],
    )
    assert statuses == [403, 403, 403, 403, 403]
    assert (await store.sites.get(mine.uid)).name == "Visible depot"
    assert len(await store.sites.all()) == 2
    # The other site does not exist for this viewer.
    response = await page.goto(f"/sites/{other.uid}/control-hub")
    assert response is not None and response.status == 404
    await shot(page, "17-viewer-other-site-404")
    await context.close()


async def test_control_hub_shows_the_public_url(tmp_path: Path, browser: Browser) -> None:
    """Behind --public-url the Control Hub shows exactly the API's wss:// URL."""
    async with harmone_server(tmp_path, public_url="wss://ocpp.example.com") as srv:
        store = srv.runtime.store
        await Accounts(store).create_user("ops@example.com", PASSWORD, role="operator")
        site = await store.sites.create(
            "Car park West", "cloud", cpms_url="wss://cpms.example.com/ocpp"
        )
        context = await new_context(browser, srv)
        page = await context.new_page()
        await sign_in(page, "ops@example.com")
        await page.get_by_role("link", name="Car park West").click()
        field = page.get_by_label("OCPP URL of Car park West")
        async with await api_client(srv, "ops@example.com") as api:
            expected = (await api.get(f"/api/v1/sites/{site.uid}")).json()["ocpp_url"]
        assert expected == f"wss://ocpp.example.com/{site.uid}"
        await expect(field).to_have_value(expected)
        await shot(page, "00-control-hub-cloud")
        await context.close()
