"""Load management in the console, in Debian's Chromium (Playwright, never a downloaded
browser).

An operator builds a two-level tree with a Modbus meter (a real Modbus TCP server on
127.0.0.1) and a dynamic limit, refuses themself a bad limit, configures two charging stations
(one single-phase on L2, one three-phase), starts simulated chargers, and watches the chart and
the connector table move — when a car starts, when the building load rises, when a limit
changes — without reloading. A viewer sees the same and cannot change it. Screenshots go to
artifacts/screenshots/ (docs/ holds copies of some).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from browser_support import require_chromium, shot
from modbus_meter import meter_sim, sdm630_registers
from playwright.async_api import Browser, BrowserContext, Page, expect
from support import PASSWORD

from harmone.loadmgmt.model import Phase, Wiring
from harmone.loadmgmt.timing import Timing
from harmone.services.accounts import Accounts
from harmone.sim.charger import SimulatedCharger
from harmone.web.serve import RunningServer

TIMEOUT = 10_000  # ms, for what the server answers at once
#: ms, for what waits on load management: a meter polled every 5 s, paced increases
SLOW = 40_000

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.usefixtures("cheap_argon2")]

require_chromium()


SERVER_OPTIONS = {"load_timing": Timing(tick=0.5, apply_bound=1.0, reaction_grace=10.0)}


async def new_context(browser: Browser, srv: RunningServer, **kw: object) -> BrowserContext:
    context = await browser.new_context(
        base_url=srv.url,
        viewport={"width": 1360, "height": 900},
        **kw,  # type: ignore[arg-type]
    )
    context.set_default_timeout(TIMEOUT)
    return context


async def sign_in(page: Page, email: str) -> None:
    await page.goto("/login")
    await page.get_by_label("E-mail address").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Sites", exact=True)).to_be_visible()


def node_card(page: Page, node_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f'li.lm-node[data-node="{node_id}"] > article')


@contextlib.asynccontextmanager
async def cars_report(*sims: SimulatedCharger) -> AsyncIterator[None]:
    """Each car draws what its charger allows and its charger says so every second, as a
    charger reporting MeterValues does (a stale reading would make it look disobedient)."""

    async def report() -> None:
        energy = 0.0
        while True:
            energy += 10
            for sim in sims:
                if sim.connectors[1].transaction_id is not None:
                    await sim.meter_values(1, energy, sim.simulated_current(1))
            await asyncio.sleep(1)

    task = asyncio.create_task(report())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def grants(page: Page, low: tuple[float, float], high: tuple[float, float]) -> None:
    """Wait until the lower and the higher of the two connectors' grants lie in these ranges."""
    await page.wait_for_function(
        """([low, high]) => {
            const values = [...document.querySelectorAll("#lm-connectors [data-granted]")]
                .map((td) => parseFloat(td.dataset.granted)).sort((a, b) => a - b);
            return values.length === 2 && values[0] >= low[0] && values[0] <= low[1]
                && values[1] >= high[0] && values[1] <= high[1];
        }""",
        arg=[list(low), list(high)],
        timeout=SLOW,
    )


async def configure_station(page: Page, uid: str, charger_id: str, **choices: str) -> None:
    await page.goto(f"/sites/{uid}/chargers/{charger_id}")
    section = page.locator("#load-management")
    await section.get_by_label("Connected below").select_option(choices["node"])
    await section.get_by_text(choices["wiring"], exact=True).click()
    if "line" in choices:
        await section.get_by_label("Line", exact=True).select_option(choices["line"])
    if "rotation" in choices:
        await section.get_by_label("Phase rotation").select_option(choices["rotation"])
    await section.get_by_label("Maximum current (A)").fill(choices["max"])
    await section.get_by_role("button", name="Save load management settings").click()
    await expect(page.get_by_text("Load management settings saved")).to_be_visible()


async def test_an_operator_builds_the_tree_and_watches_the_load(
    srv: RunningServer, browser: Browser
) -> None:
    rt = srv.runtime
    await Accounts(rt.store).create_user("ops@example.com", PASSWORD, role="operator")
    site = await rt.store.sites.create("Depot Süd", "cloud")
    url = f"{rt.cloud_base_url}/{site.uid}"
    tab = f"/sites/{site.uid}/load-management"
    async with meter_sim(inputs=sdm630_registers((3, 3, 3), (690, 690, 690))) as meter:
        context = await new_context(browser, srv)
        page = await context.new_page()
        await sign_in(page, "ops@example.com")
        await page.goto(f"/sites/{site.uid}/control-hub")
        await (
            page.get_by_role("navigation", name="Site")
            .get_by_role("link", name="Load management")
            .click()
        )
        await expect(
            page.get_by_text("Load management is not set up for this site")
        ).to_be_visible()

        # The grid connection, then a cluster with a Modbus meter, then a sub-cluster.
        await page.get_by_label("Limit per phase (A)").fill("63")
        await page.get_by_role("button", name="Set up load management").click()
        await expect(page.get_by_text("Load management is set up.")).to_be_visible()
        await page.get_by_role("link", name="Add a cluster below grid").click()
        await page.get_by_label("Name", exact=True).fill("garage")
        await page.get_by_label("Limit per phase (A)").fill("32")
        await page.get_by_label("Safety current (A)").fill("6")
        await page.get_by_text("Modbus TCP meter, read by HARMON-E").click()
        await page.get_by_label("Meter address").fill("127.0.0.1")
        await page.get_by_label("Port", exact=True).fill(str(meter.port))
        await shot(page, "lm-01-new-cluster")
        await page.get_by_role("button", name="Add cluster").click()
        await expect(page.get_by_text("Cluster added.")).to_be_visible()
        await page.get_by_role("link", name="Add a cluster below garage").click()
        await page.get_by_label("Name", exact=True).fill("row-a")
        await page.get_by_label("Limit per phase (A)").fill("20")
        await page.get_by_role("button", name="Add cluster").click()
        await expect(page.get_by_text("Cluster added.")).to_be_visible()
        await expect(node_card(page, "garage").get_by_text("OK", exact=True)).to_be_visible(
            timeout=SLOW
        )

        # A bad limit is refused with a clear message, and nothing is saved.
        before = rt.loadmgmt.config(site.uid).to_json()
        await page.get_by_role("link", name="Edit row-a").click()
        await page.get_by_label("Safety current (A)").fill("25")
        await page.get_by_role("button", name="Save").click()
        await expect(
            page.get_by_text("The safety current cannot be above the limit (20 A)")
        ).to_be_visible()
        await page.get_by_label("Limit per phase (A)").fill("-20")
        await page.get_by_role("button", name="Save").click()
        await expect(page.get_by_text("Its limit per phase cannot be negative.")).to_be_visible()
        await expect(page.get_by_role("alert")).to_have_text(
            "Nothing was saved: correct the fields marked below."
        )
        await expect(page.get_by_label("Limit per phase (A)")).to_have_attribute(
            "aria-invalid", "true"
        )
        await shot(page, "lm-02-bad-limit-refused")
        assert rt.loadmgmt.config(site.uid).to_json() == before
        await page.get_by_role("link", name="Cancel").click()

        # A dynamic limit on garage, set here by the operator.
        garage = node_card(page, "garage")
        await garage.get_by_label("Dynamic limit (A)").fill("24")
        await garage.get_by_role("button", name="Set limit").click()
        await expect(page.get_by_text("Dynamic limit set")).to_be_visible()
        await expect(node_card(page, "garage").get_by_text("Dynamic limit 24 A")).to_be_visible()
        await expect(node_card(page, "garage")).to_contain_text("set by ops@example.com (console)")

        # Two charging stations connect; each is placed and wired on its page.
        single = SimulatedCharger(url, "CP-1", "1.6", phases=1, max_current=16)
        three = SimulatedCharger(url, "CP-2", "2.0.1", phases=3)
        async with single, three, cars_report(single, three):
            for sim in (single, three):
                await sim.boot()
                await sim.status(1, "Available")
            await configure_station(
                page, site.uid, "CP-1", node="row-a", wiring="Single-phase", line="L2", max="16"
            )
            await expect(page.locator("#load-management")).to_contain_text("single-phase on L2")
            await shot(page, "lm-03-charging-station")
            await configure_station(
                page,
                site.uid,
                "CP-2",
                node="garage",
                wiring="Three-phase",
                rotation="L1-L2-L3",
                max="32",
            )
            config = rt.loadmgmt.config(site.uid)
            cp1, cp2 = config.settings_for("CP-1"), config.settings_for("CP-2")
            assert (cp1.node, cp1.wiring, cp1.phase_rotation) == ("row-a", Wiring.LN, (Phase.L2,))
            assert (cp2.node, cp2.wiring, cp2.max_current) == ("garage", Wiring.THREE_PHASE, 32)

            # The tab, live: watch garage's L2 chart and the connector table.
            await page.goto(tab)
            await expect(page.locator("[data-live-text]")).to_have_text("Live")
            await page.locator("#lm-chart-node").select_option("garage")
            await page.evaluate("window.__sameDocument = true")
            l2 = page.locator('figure.lm-chart[data-phase="1"]')
            rows = page.locator("#lm-connectors")

            # A car starts on CP-1: granted its 16 A, on L2 only.
            await single.start_transaction(1, "TAG-1")
            await expect(
                rows.locator('tr[data-connector="CP-1/1"] [data-granted]')
            ).to_have_attribute("data-granted", "16", timeout=SLOW)
            await expect(l2).to_have_attribute("data-chargers", "16", timeout=SLOW)
            await expect(page.locator('figure.lm-chart[data-phase="0"]')).to_have_attribute(
                "data-chargers", "0"
            )
            await expect(rows.locator('tr[data-connector="CP-1/1"] [data-measured]')).to_have_text(
                "16 A", timeout=SLOW
            )

            # A second car on CP-2 (three-phase): the 24 A dynamic limit less 3 A of building
            # load on L2 is shared.
            await three.start_transaction(1, "TAG-2")
            for connector in ("CP-1/1", "CP-2/1"):
                await expect(
                    rows.locator(f'tr[data-connector="{connector}"] [data-granted]')
                ).to_have_attribute("data-granted", "10.5", timeout=SLOW)
            await expect(l2).to_have_attribute("data-chargers", "21", timeout=SLOW)

            # The building load on L2 rises to 14 A: 10 A are left, only one car's 6 A minimum
            # fits; the other is paused and waits its turn.
            meter.patch = sdm630_registers((3, 14, 3), (690, 3220, 690))
            await expect(l2).to_have_attribute("data-building", "14", timeout=SLOW)
            await expect(rows.get_by_text("Paused: below minimum")).to_be_visible(timeout=SLOW)
            # (the meter's float32 reading may be a hair above 14 A: grants are rounded down)
            await grants(page, (0, 0), (9.8, 10))
            await expect(node_card(page, "garage").locator("td[data-load='2']")).to_have_text(
                re.compile(r"^2[34]\.\d$"), timeout=SLOW
            )
            await shot(page, "lm-04-paused-below-minimum")

            # An energy manager raises the limit to 30 A over the REST API: 16 A for two cars.
            token = await Accounts(rt.store).create_token("ops@example.com")
            async with httpx.AsyncClient(
                base_url=srv.url, headers={"Authorization": f"Bearer {token}"}
            ) as api:
                r = await api.put(
                    f"/api/v1/sites/{site.uid}/load-management/nodes/garage/dynamic-limit",
                    json={"limit": 30},
                )
                assert r.status_code == 200
            await expect(l2).to_have_attribute("data-limit", "30", timeout=SLOW)
            await expect(node_card(page, "garage")).to_contain_text(
                "set by ops@example.com (REST API)", timeout=SLOW
            )
            await grants(page, (7.8, 8), (7.8, 8))
            await expect(l2.locator("[data-now]")).to_contain_text("Limit 30.0 A")
            assert int(await l2.get_attribute("data-points") or 0) > 3
            assert await page.evaluate("window.__sameDocument === true")  # never reloaded
            await shot(page, "lm-05-tab")

            # The 24 h range shows the same node from the per-minute summaries or the rounds.
            await page.get_by_role("button", name="24 h").click()
            await expect(page.locator("#lm-charts")).to_have_attribute(
                "data-resolution", re.compile("round|minute")
            )
            # Dark mode: the chart takes the dark palette.
            await page.emulate_media(color_scheme="dark")
            await page.get_by_role("button", name="15 min").click()
            await expect(l2).to_have_attribute("data-limit", "30")
            await shot(page, "lm-06-tab-dark")
            assert (
                await page.evaluate("getComputedStyle(document.body).backgroundColor")
                == "rgb(15, 20, 25)"
            )

            # The charging station's page shows what it is granted now, and why.
            await page.emulate_media(color_scheme="light")
            await page.goto(f"/sites/{site.uid}/chargers/CP-1")
            section = page.locator("#load-management")
            await expect(section).to_contain_text("granted 8")
            await expect(section.get_by_text("Fuse limit")).to_be_visible()
            await shot(page, "lm-09-charging-station-charging")
        await context.close()


async def test_a_viewer_sees_load_management_but_cannot_change_it(
    srv: RunningServer, browser: Browser
) -> None:
    rt = srv.runtime
    site = await rt.store.sites.create("Office", "cloud")
    await rt.store.chargers.register(site.uid, "CP-9")
    await rt.loadmgmt.configure(
        site.uid,
        {
            "tree": {
                "id": "grid",
                "max_current": 40,
                "children": [{"id": "garage", "max_current": 25}],
            },
            "chargers": {"CP-9": {"node": "garage", "max_current": 16}},
        },
    )
    rt.loadmgmt.set_dynamic_limit(site.uid, "garage", 20, by="ems@example.com (REST API)")
    before = rt.loadmgmt.config(site.uid).to_json()
    await Accounts(rt.store).create_account("view@example.com", PASSWORD, "viewer", [site.uid])
    context = await new_context(browser, srv)
    page = await context.new_page()
    await sign_in(page, "view@example.com")
    await page.goto(f"/sites/{site.uid}/load-management")
    await expect(page.get_by_role("heading", name="Electrical tree")).to_be_visible()
    await expect(node_card(page, "garage")).to_contain_text("Dynamic limit 20 A")
    await expect(node_card(page, "garage")).to_contain_text("set by ems@example.com (REST API)")
    await expect(page.locator("#lm-charts .uplot")).to_have_count(3)
    for name in ("Edit garage", "Add a cluster below grid", "Remove garage"):
        await expect(page.get_by_role("link", name=name)).to_have_count(0)
    await expect(page.get_by_role("button", name="Set limit")).to_have_count(0)
    await expect(page.get_by_role("button", name="Save")).to_have_count(0)
    await shot(page, "lm-07-viewer")
    await page.set_viewport_size({"width": 390, "height": 844})
    await expect(page.locator("#lm-charts .uplot")).to_have_count(3)
    await shot(page, "lm-08-viewer-phone")
    await page.set_viewport_size({"width": 1360, "height": 900})
    await page.goto(f"/sites/{site.uid}/chargers/CP-9")
    await expect(page.locator("#load-management")).to_contain_text("Connected below")
    await expect(page.get_by_role("button", name="Save load management settings")).to_have_count(0)

    token = await page.locator("input[name=csrf_token]").first.input_value()
    statuses = await page.evaluate(
        """async ([uid, token]) => {
            const post = (url, fields) => fetch(url, {method: "POST", body: new URLSearchParams(
                {csrf_token: token, ...fields}), redirect: "manual"}).then(r => r.status);
            const base = `/sites/${uid}/load-management`;
            return [
                await post(`${base}/nodes/garage`, {max_current: "100", meter: "none"}),
                await post(`${base}/nodes/garage/dynamic-limit`, {action: "clear"}),
                await post(`${base}/settings`, {policy: "priority"}),
                await post(`/sites/${uid}/chargers/CP-9/load-management`, {node: "grid"}),
            ];
        }""",
        [site.uid, token],
    )
    assert statuses == [403, 403, 403, 403]
    response = await page.goto(f"/sites/{site.uid}/load-management/nodes/garage")
    assert response is not None and response.status == 403
    assert rt.loadmgmt.config(site.uid).to_json() == before
    assert rt.loadmgmt.status(site.uid).dynamic_limits == {"garage": 20}
    await context.close()
