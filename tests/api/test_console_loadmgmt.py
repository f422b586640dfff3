"""The console's load management over real HTTP: the tab and its forms, the charging station's
settings, refusals that save nothing, roles, and the live stream and chart data.

Every check of what was saved reads the service (`rt.loadmgmt.config`), which is also what the
REST API reads."""

from __future__ import annotations

import asyncio
import html
import json
import secrets
from datetime import timedelta
from typing import Any

import httpx
import pytest
from console_support import signed_in
from modbus_meter import meter_sim, sdm630_registers
from ocpp.v16 import call as call16
from support import ON_SHARED_SERVER, free_port, make_site, wait_for

from harmone.errors import NotFound
from harmone.loadmgmt.controller import Timing
from harmone.loadmgmt.edits import config_version
from harmone.loadmgmt.model import AllocationOptions, Phase, Wiring
from harmone.services.accounts import Accounts
from harmone.sim import SimulatedCharger, SimulatedCpms
from harmone.web.console.routes_loadmgmt import people_words
from harmone.web.serve import RunningServer

FAST = {
    "load_timing": Timing(tick=0.2, reaction_grace=1.0),
    "load_options": AllocationOptions(
        meter_max_age=timedelta(seconds=2), settle_time=timedelta(seconds=1)
    ),
}
TREE: dict[str, Any] = {
    "policy": "equal_share",
    "min_interval": 0,
    "tree": {
        "id": "grid",
        "max_current": 63,
        "children": [{"id": "garage", "max_current": 32}, {"id": "office", "max_current": 20}],
    },
}


pytestmark = pytest.mark.usefixtures("cheap_argon2")


SERVER_OPTIONS = FAST


def saved(srv: RunningServer, uid: str) -> dict[str, Any]:
    return srv.runtime.loadmgmt.config(uid).to_json()


def version(srv: RunningServer, uid: str) -> str:
    return config_version(saved(srv, uid))


def text_of(page: httpx.Response) -> str:
    return html.unescape(page.text)


async def test_setting_up_load_management_from_the_tab(srv: RunningServer) -> None:
    site, _ = await make_site(srv, None)
    tab = f"/sites/{site.uid}/load-management"
    async with await signed_in(srv, "op@example.com", "operator") as op:
        page = await op.get(tab)
        assert page.status_code == 200
        assert "Load management is not set up for this site" in page.text
        assert 'aria-current="page">Load management</a>' in page.text
        r = await op.post(
            f"{tab}/setup", {"id": "grid", "max_current": "sixty", "safety_current": "0"}
        )
        assert r.status_code == 422
        assert "Enter its limit per phase as a number of amps, e.g. 63." in text_of(r)
        r = await op.post(
            f"{tab}/setup", {"id": "grid", "max_current": "16", "safety_current": "20"}
        )
        assert r.status_code == 422
        assert "The safety current cannot be above the limit (16 A)" in text_of(r)
        with pytest.raises(NotFound):
            srv.runtime.loadmgmt.config(site.uid)  # nothing was saved
        r = await op.post(
            f"{tab}/setup", {"id": "grid", "max_current": "63,5", "safety_current": ""}
        )
        assert r.status_code == 303 and r.headers["location"] == f"{tab}?done=setup"
        assert saved(srv, site.uid)["tree"]["max_current"] == 63.5  # a decimal comma
        page = await op.get(r.headers["location"])
        assert "Load management is set up." in page.text
        assert 'data-node="grid"' in page.text and "63.5 A per phase" in page.text
        # A second set-up (another window) changes nothing.
        r = await op.post(f"{tab}/setup", {"id": "main", "max_current": "10"})
        assert r.status_code == 303 and r.headers["location"] == f"{tab}?done=already"
        assert saved(srv, site.uid)["tree"]["id"] == "grid"


async def test_clusters_are_added_edited_moved_and_removed(srv: RunningServer) -> None:
    site, _ = await make_site(srv, None)
    await srv.runtime.loadmgmt.configure(site.uid, TREE)
    nodes = f"/sites/{site.uid}/load-management/nodes"
    async with await signed_in(srv, "op@example.com", "operator") as op:
        page = await op.get(f"{nodes}/new?parent=garage")
        assert page.status_code == 200 and '<option value="garage" selected>' in page.text
        form = {"id": "row-a", "parent": "garage", "max_current": "16", "meter": "none"}
        r = await op.post(nodes, {**form, "version": version(srv, site.uid)})
        assert r.status_code == 303 and r.headers["location"].endswith("?done=added")
        tree = saved(srv, site.uid)["tree"]
        assert tree["children"][0]["children"][0]["id"] == "row-a"

        # A child limit above its parent's is saved, with a warning on the tab.
        edit = {"max_current": "40", "safety_current": "0", "meter": "none", "parent": "garage"}
        r = await op.post(f"{nodes}/row-a", {**edit, "version": version(srv, site.uid)})
        assert r.status_code == 303
        tab = text_of(await op.get(f"/sites/{site.uid}/load-management"))
        assert "1 warning" in tab
        assert "row-a allows 40 A per phase, more than garage above it (32 A)" in tab

        # Moving it below the grid connection takes it out of garage.
        edit = {**edit, "parent": "grid", "max_current": "16"}
        r = await op.post(f"{nodes}/row-a", {**edit, "version": version(srv, site.uid)})
        assert r.status_code == 303
        children = [c["id"] for c in saved(srv, site.uid)["tree"]["children"]]
        assert children == ["garage", "office", "row-a"]

        # Removing garage after moving row-a back below it: row-a moves up again.
        await op.post(
            f"{nodes}/row-a", {**edit, "parent": "garage", "version": version(srv, site.uid)}
        )
        page = await op.get(f"{nodes}/garage/remove")
        assert 'Its clusters <span class="mono">row-a</span> move up below' in page.text
        r = await op.post(f"{nodes}/garage/remove", {"version": version(srv, site.uid)})
        assert r.status_code == 303 and r.headers["location"].endswith("?done=removed")
        children = [c["id"] for c in saved(srv, site.uid)["tree"]["children"]]
        assert children == ["row-a", "office"]  # in garage's place
        # A cluster that no longer exists sends the browser back to the tab.
        r = await op.get(f"{nodes}/garage")
        assert r.status_code == 303 and r.headers["location"].endswith("?done=gone")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_current": "-5"}, "Its limit per phase cannot be negative."),
        ({"max_current": ""}, "Enter its limit per phase in amps, e.g. 63."),
        # issue 10 item 2: what is not a finite number is refused, never stored as a limit
        ({"max_current": "NaN"}, "Enter its limit per phase as a number of amps, e.g. 63."),
        ({"max_current": "inf"}, "Enter its limit per phase as a number of amps, e.g. 63."),
        ({"max_current": "1e999"}, "Enter its limit per phase as a number of amps, e.g. 63."),
        ({"safety_current": "40"}, "The safety current cannot be above the limit (32 A)"),
        ({"max_imbalance": "lots"}, "Enter the largest phase difference as a positive number"),
        ({"parent": "row-a"}, "'garage' cannot be moved below 'row-a': that is inside 'garage'"),
        ({"meter": "modbus", "meter_host": ""}, "Enter the meter's IP address or host name."),
        (
            {"meter": "modbus", "meter_host": "10.0.0.1", "meter_port": "70000"},
            "a whole number from 1 to 65535",
        ),
    ],
)
@ON_SHARED_SERVER
async def test_a_bad_cluster_is_refused_with_a_clear_message_and_nothing_is_saved(
    shared_srv: RunningServer, fields: dict[str, str], message: str
) -> None:
    srv = shared_srv  # one server for the table: each case has a site and a user of its own
    email = f"op-{secrets.token_hex(4)}@example.com"
    site, _ = await make_site(srv, None)
    config = {
        **TREE,
        "tree": {
            **TREE["tree"],
            "children": [
                {
                    "id": "garage",
                    "max_current": 32,
                    "children": [{"id": "row-a", "max_current": 16}],
                }
            ],
        },
    }
    await srv.runtime.loadmgmt.configure(site.uid, config)
    before = saved(srv, site.uid)
    form = {"max_current": "32", "safety_current": "0", "meter": "none", "parent": "grid"}
    async with await signed_in(srv, email, "operator") as op:
        r = await op.post(
            f"/sites/{site.uid}/load-management/nodes/garage",
            {**form, **fields, "version": version(srv, site.uid)},
        )
        assert r.status_code == 422
        assert message in text_of(r)
        assert 'role="alert"' in r.text or 'aria-invalid="true"' in r.text
    assert saved(srv, site.uid) == before


async def test_names_are_refused_when_taken_by_a_cluster_or_a_charging_station(
    srv: RunningServer,
) -> None:
    site, _ = await make_site(srv, None)
    await srv.runtime.loadmgmt.configure(
        site.uid, {**TREE, "chargers": {"CP-1": {"node": "garage", "max_current": 16}}}
    )
    before = saved(srv, site.uid)
    nodes = f"/sites/{site.uid}/load-management/nodes"
    async with await signed_in(srv, "op@example.com", "operator") as op:
        form = {"parent": "grid", "max_current": "10", "meter": "none"}
        r = await op.post(nodes, {**form, "id": "office", "version": version(srv, site.uid)})
        assert r.status_code == 422
        assert "There is already a cluster named 'office': choose another name." in text_of(r)
        r = await op.post(nodes, {**form, "id": "CP-1", "version": version(srv, site.uid)})
        assert r.status_code == 422
        assert "'CP-1' is a charging station of this site" in text_of(r)
        assert "or the charging station would be in two places" in text_of(r)
        r = await op.post(
            nodes, {**form, "id": "no spaces please", "version": version(srv, site.uid)}
        )
        assert r.status_code == 422 and "letters, digits, dots, dashes or underscores" in text_of(r)
    assert saved(srv, site.uid) == before


async def test_a_change_made_on_an_outdated_configuration_is_refused(srv: RunningServer) -> None:
    site, _ = await make_site(srv, None)
    await srv.runtime.loadmgmt.configure(site.uid, TREE)
    old = version(srv, site.uid)
    # Someone else changes the site meanwhile, through the REST API.
    await Accounts(srv.runtime.store).create_user(
        "ems@example.com", "correct horse battery", "operator"
    )
    token = await Accounts(srv.runtime.store).create_token("ems@example.com")
    changed = {**TREE, "tree": {**TREE["tree"], "max_current": 50}}
    async with httpx.AsyncClient(
        base_url=srv.url, headers={"Authorization": f"Bearer {token}"}
    ) as api:
        assert (
            await api.put(f"/api/v1/sites/{site.uid}/load-management", json=changed)
        ).status_code == 200
    after_rest = saved(srv, site.uid)
    async with await signed_in(srv, "op@example.com", "operator") as op:
        form = {"max_current": "25", "safety_current": "0", "meter": "none", "parent": "grid"}
        r = await op.post(
            f"/sites/{site.uid}/load-management/nodes/office", {**form, "version": old}
        )
        assert r.status_code == 409
        assert (
            "changed meanwhile (by someone else, or in another window): nothing was saved"
            in text_of(r)
        )
        assert 'value="25"' in r.text  # what they typed is kept
        assert f'name="version" value="{version(srv, site.uid)}"' in r.text  # on the new config
        assert saved(srv, site.uid) == after_rest
        r = await op.post(
            f"/sites/{site.uid}/load-management/settings",
            {"enabled": "1", "policy": "priority", "version": old},
        )
        assert r.status_code == 409 and saved(srv, site.uid) == after_rest


async def test_a_meter_that_cannot_be_reached_is_refused_unless_saved_anyway(
    srv: RunningServer,
) -> None:
    site, _ = await make_site(srv, None)
    await srv.runtime.loadmgmt.configure(site.uid, TREE)
    before = saved(srv, site.uid)
    closed = free_port()
    form = {
        "max_current": "32",
        "safety_current": "8",
        "parent": "grid",
        "meter": "modbus",
        "meter_host": "127.0.0.1",
        "meter_port": str(closed),
        "meter_unit": "1",
        "meter_map": "eastron_sdm630",
    }
    url = f"/sites/{site.uid}/load-management/nodes/garage"
    async with await signed_in(srv, "op@example.com", "operator") as op:
        r = await op.post(url, {**form, "version": version(srv, site.uid)})
        assert r.status_code == 422
        page = text_of(r)
        assert (
            f"The meter at 127.0.0.1:{closed} (unit 1) did not answer: connection refused." in page
        )
        assert "held at its safety current (8 A)" in page
        assert 'name="save_unreachable"' in r.text
        assert saved(srv, site.uid) == before
        r = await op.post(url, {**form, "save_unreachable": "1", "version": version(srv, site.uid)})
        assert r.status_code == 303
        garage = saved(srv, site.uid)["tree"]["children"][0]
        assert garage["meter"]["port"] == closed and garage["metered"] is True
        # A meter that answers is saved at once; saving again without changing it reads nothing.
        async with meter_sim(inputs=sdm630_registers((5, 5, 5), (1150, 1150, 1150))) as meter:
            form = {**form, "meter_port": str(meter.port)}
            r = await op.post(url, {**form, "version": version(srv, site.uid)})
            assert r.status_code == 303, text_of(r)
        assert saved(srv, site.uid)["tree"]["children"][0]["meter"]["port"] == meter.port
        r = await op.post(url, {**form, "max_current": "30", "version": version(srv, site.uid)})
        assert r.status_code == 303  # the meter is gone now, but it was not changed
        # Back to no meter.
        r = await op.post(url, {**form, "meter": "none", "version": version(srv, site.uid)})
        assert r.status_code == 303
        garage = saved(srv, site.uid)["tree"]["children"][0]
        assert "meter" not in garage and garage["metered"] is False


async def test_dynamic_limits_show_who_set_them(srv: RunningServer) -> None:
    site, _ = await make_site(srv, None)
    await srv.runtime.loadmgmt.configure(site.uid, TREE)
    base = f"/sites/{site.uid}/load-management"
    lm = srv.runtime.loadmgmt
    async with await signed_in(srv, "op@example.com", "operator") as op:
        r = await op.post(f"{base}/nodes/garage/dynamic-limit", {"limit": "-1", "action": "set"})
        assert (
            r.status_code == 422 and "The limit cannot be negative (0 suspends charging)." in r.text
        )
        for bad in ("x", "NaN", "Infinity", "1e999"):
            r = await op.post(f"{base}/nodes/garage/dynamic-limit", {"limit": bad, "action": "set"})
            assert r.status_code == 422 and "Enter the limit in amps per phase" in r.text, bad
        assert lm.status(site.uid).dynamic_limits == {}
        r = await op.post(f"{base}/nodes/garage/dynamic-limit", {"limit": "12.5", "action": "set"})
        assert r.status_code == 303 and r.headers["location"].endswith("done=limit-set")
        assert lm.status(site.uid).dynamic_limits == {"garage": 12.5}
        await wait_for(
            lambda: any(n.id == "garage" and n.limit == 12.5 for n in lm.status(site.uid).nodes)
        )
        page = text_of(await op.get(base))
        assert "Dynamic limit 12.5 A" in page and "set by op@example.com (console)" in page
        assert "in force: a dynamic limit" in page
        # The REST API's limit says who set it too.
        token = await Accounts(srv.runtime.store).create_token("op@example.com")
        async with httpx.AsyncClient(
            base_url=srv.url, headers={"Authorization": f"Bearer {token}"}
        ) as api:
            r = await api.put(
                f"/api/v1/sites/{site.uid}/load-management/nodes/office/dynamic-limit",
                json={"limit": 0},
            )
            assert r.status_code == 200
        page = text_of(await op.get(base))
        assert "Dynamic limit 0 A" in page and "charging below is suspended" in page
        assert "set by op@example.com (REST API)" in page
        r = await op.post(f"{base}/nodes/garage/dynamic-limit", {"action": "clear"})
        assert r.status_code == 303 and lm.status(site.uid).dynamic_limits == {"office": 0.0}


async def test_sharing_settings(srv: RunningServer) -> None:
    site, _ = await make_site(srv, None)
    await srv.runtime.loadmgmt.configure(site.uid, TREE)
    async with await signed_in(srv, "op@example.com", "operator") as op:
        url = f"/sites/{site.uid}/load-management/settings"
        r = await op.post(
            url, {"policy": "whatever", "enabled": "1", "version": version(srv, site.uid)}
        )
        assert r.status_code == 422 and "Choose how the current is shared." in r.text
        r = await op.post(url, {"policy": "priority", "version": version(srv, site.uid)})
        assert r.status_code == 303
        config = saved(srv, site.uid)
        assert config["policy"] == "priority" and config["enabled"] is False
        page = text_of(await op.get(f"/sites/{site.uid}/load-management"))
        assert "HARMON-E sends no charging profiles: it only relays." in page


async def test_charging_station_load_settings(srv: RunningServer) -> None:
    site, _ = await make_site(srv, None)
    await srv.runtime.store.chargers.register(site.uid, "CP-1")
    page_url = f"/sites/{site.uid}/chargers/CP-1"
    async with await signed_in(srv, "op@example.com", "operator") as op:
        page = text_of(await op.get(page_url))
        assert "Load management is not set up for this site" in page
        r = await op.post(f"{page_url}/load-management", {"node": "grid", "wiring": "L-N"})
        assert r.status_code == 422 and "Load management is not set up for this site" in text_of(r)

        await srv.runtime.loadmgmt.configure(site.uid, TREE)
        page = text_of(await op.get(page_url))
        assert "The site's default settings for charging stations" in page
        single = {
            "node": "garage",
            "wiring": "L-N",
            "line": "L2",
            "voltage": "230",
            "min_current": "6",
            "max_current": "16",
            "priority": "2",
            "tx_default_limit": "0",
            "rate_unit": "A",
            "version": version(srv, site.uid),
        }
        r = await op.post(f"{page_url}/load-management", single)
        assert r.status_code == 303 and r.headers["location"].endswith(
            "?done=lm-saved#load-management"
        )
        s = srv.runtime.loadmgmt.config(site.uid).settings_for("CP-1")
        assert (s.node, s.wiring, s.phase_rotation, s.max_current, s.priority) == (
            "garage",
            Wiring.LN,
            (Phase.L2,),
            16.0,
            2,
        )
        page = text_of(await op.get(r.headers["location"]))
        assert "Load management settings saved" in page and "single-phase on L2" in page

        three = {
            **single,
            "wiring": "3-phase",
            "rotation": "L2-L3-L1",
            "max_current": "32",
            "rate_unit": "W",
            "version": version(srv, site.uid),
        }
        assert (await op.post(f"{page_url}/load-management", three)).status_code == 303
        s = srv.runtime.loadmgmt.config(site.uid).settings_for("CP-1")
        assert s.wiring is Wiring.THREE_PHASE and s.rate_unit == "W"
        assert s.phase_rotation == (Phase.L2, Phase.L3, Phase.L1)

        # Refusals: nothing saved, messages next to the fields.
        before = saved(srv, site.uid)
        for fields, message in [
            (
                {"min_current": "20", "max_current": "16"},
                "The minimum cannot be above the maximum (16 A).",
            ),
            ({"tx_default_limit": "40"}, "This limit cannot be above the maximum (32 A)."),
            ({"voltage": "12"}, "from 100 to 500 V"),
            ({"node": "nowhere"}, "Choose where in the tree the charging station is connected."),
            ({"priority": "high"}, "Enter a whole number; higher is served first"),
            (
                {"wiring": "L-L", "line_pair": "L1-L1"},
                "Choose the two lines it is connected between.",
            ),
        ]:
            r = await op.post(
                f"{page_url}/load-management",
                {**three, **fields, "version": version(srv, site.uid)},
            )
            assert r.status_code == 422, fields
            assert message in text_of(r), fields
            assert saved(srv, site.uid) == before

        r = await op.post(f"{page_url}/load-management/reset", {"version": version(srv, site.uid)})
        assert r.status_code == 303
        assert "CP-1" not in saved(srv, site.uid)["chargers"]


async def test_viewers_see_load_management_but_cannot_change_it(srv: RunningServer) -> None:
    site, _ = await make_site(srv, None)
    await srv.runtime.store.chargers.register(site.uid, "CP-1")
    await srv.runtime.loadmgmt.configure(site.uid, TREE)
    srv.runtime.loadmgmt.set_dynamic_limit(site.uid, "garage", 10, by="ems")
    before = saved(srv, site.uid)
    base = f"/sites/{site.uid}/load-management"
    async with await signed_in(srv, "viewer@example.com", "viewer") as viewer:
        tab = await viewer.get(base)
        assert tab.status_code == 200
        assert "Electrical tree" in tab.text and "Dynamic limit 10 A" in tab.text
        assert "<form" not in tab.text.split("</header>", 1)[1].replace('action="/logout"', "")
        charger = await viewer.get(f"/sites/{site.uid}/chargers/CP-1")
        assert (
            "Load management" in charger.text
            and '/load-management" class="form"' not in charger.text
        )
        for url in (f"{base}/nodes/new", f"{base}/nodes/garage", f"{base}/nodes/garage/remove"):
            assert (await viewer.get(url)).status_code == 403, url
        posts = {
            f"{base}/setup": {"id": "g", "max_current": "1"},
            f"{base}/settings": {"policy": "priority"},
            f"{base}/nodes": {"id": "x", "max_current": "1", "parent": "grid"},
            f"{base}/nodes/garage": {"max_current": "1"},
            f"{base}/nodes/garage/remove": {},
            f"{base}/nodes/garage/dynamic-limit": {"action": "clear"},
            f"/sites/{site.uid}/chargers/CP-1/load-management": {"node": "grid", "wiring": "L-N"},
            f"/sites/{site.uid}/chargers/CP-1/load-management/reset": {},
        }
        for url, fields in posts.items():
            r = await viewer.post(url, fields)
            assert r.status_code == 403, url
    assert saved(srv, site.uid) == before
    assert srv.runtime.loadmgmt.status(site.uid).dynamic_limits == {"garage": 10}


class EventReader:
    """Reads a text/event-stream response event by event."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self) -> tuple[str, Any]:
        event, data = "message", None
        async for line in self.lines:
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif not line and data is not None:
                return event, data
        raise AssertionError("stream ended")

    async def until(self, event: str, predicate: Any = None) -> Any:
        async with asyncio.timeout(30):
            while True:
                name, data = await self.next()
                if name == event and (predicate is None or predicate(data)):
                    return data


async def test_the_stream_and_the_chart_data_follow_a_charging_car(srv: RunningServer) -> None:
    site, url = await make_site(srv, None)
    await srv.runtime.loadmgmt.configure(
        site.uid,
        {
            **TREE,
            "tree": {
                **TREE["tree"],
                "children": [{"id": "garage", "max_current": 32, "metered": True}],
            },
            "chargers": {
                "CP-1": {
                    "node": "garage",
                    "max_current": 16,
                    "wiring": "L-N",
                    "phase_rotation": ["L2"],
                }
            },
        },
    )
    srv.runtime.loadmgmt.push_reading(site.uid, "garage", {"current": [2, 3, 4]})
    base = f"/sites/{site.uid}/load-management"
    async with await signed_in(srv, "op@example.com", "operator") as op:
        await wait_for(lambda: bool(srv.runtime.loadmgmt.timeseries(site.uid, None, 10)))
        series = (await op.get(f"{base}/series?seconds=300")).json()
        assert series["resolution"] == "round" and series["seconds"] == 300 and series["t"]
        garage = series["nodes"]["garage"]
        assert garage["building"][1][-1] == 3 and garage["limit"][-1] == 32
        after = series["t"][-1]
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in op.cookies.items())}
        async with op.http.stream("GET", f"{base}/events?after={after}", headers=headers) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = EventReader(resp)
            status = await events.until("status")
            assert set(status["nodes"]) == {"grid", "garage"}
            assert status["version"] == version(srv, site.uid)
            async with SimulatedCharger(url, "CP-1", "1.6") as sim:
                await sim.boot()
                await sim.start_transaction(1, "TAG")
                # The car starts: the connector table and the chart's charger series show it.
                status = await events.until(
                    "status", lambda d: 'data-granted="16"' in d["connectors"]
                )
                assert "CP-1" in status["connectors"] and "Charging" in status["connectors"]
                samples = await events.until(
                    "samples",
                    lambda d: (
                        d["nodes"].get("garage", {}).get("chargers", [[], [], []])[1][-1:] == [16]
                    ),
                )
                assert all(t > after for t in samples["t"])
                # Building load rises: the grid's load follows.
                srv.runtime.loadmgmt.push_reading(site.uid, "garage", {"current": [2, 20, 4]})
                await events.until(
                    "samples",
                    lambda d: (
                        d["nodes"].get("garage", {}).get("building", [[], [], []])[1][-1:] == [20]
                    ),
                )
                # A dynamic limit: in force on the node at once.
                srv.runtime.loadmgmt.set_dynamic_limit(site.uid, "garage", 10, by="ems")
                status = await events.until(
                    "status", lambda d: 'data-limit="10"' in d["nodes"]["garage"]
                )
                assert "set by ems" in status["nodes"]["garage"]
        # Longer than the rounds reach back, the per-minute summaries answer.
        long = (await op.get(f"{base}/series?seconds=86400")).json()
        assert long["resolution"] in ("round", "minute") and long["t"]
        r = await op.get(f"{base}/series?seconds=5")
        assert r.status_code == 422  # at least a minute


async def test_chart_data_of_a_site_without_load_management_is_empty(srv: RunningServer) -> None:
    site, _ = await make_site(srv, None)
    async with await signed_in(srv, "op@example.com", "operator") as op:
        r = await op.get(f"/sites/{site.uid}/load-management/series")
        assert r.json() == {"resolution": "round", "t": [], "nodes": {}, "seconds": 900}
        for url in ("nodes/new", "nodes/x1", "nodes/x1/remove"):
            r = await op.get(f"/sites/{site.uid}/load-management/{url}")
            assert r.status_code == 303 and r.headers["location"].endswith("?done=not-set-up")


def test_people_words() -> None:
    assert people_words("node 'g' safety_current is above its max_current") == (
        "Node 'g' safety current is above its limit"
    )
    assert people_words("min_current 10 A") == "Minimum current 10 A"
    assert people_words("charger 'CP-1' min_current 10.0 A is above max_current 8.0 A") == (
        "Charger 'CP-1' minimum current 10.0 A is above maximum current 8.0 A"
    )


async def test_a_flagged_charging_station_says_what_to_do(srv: RunningServer) -> None:
    site, url = await make_site(srv, None)
    await srv.runtime.loadmgmt.configure(site.uid, TREE)
    lm = srv.runtime.loadmgmt
    async with (
        await signed_in(srv, "op@example.com", "operator") as op,
        SimulatedCharger(url, "MUTE", "1.6", answer_profiles=False) as sim,
    ):
        await sim.boot()  # its TxDefaultProfile is never answered
        await wait_for(
            lambda: (
                lm.status(site.uid).chargers.get("MUTE") is not None
                and lm.status(site.uid).chargers["MUTE"].flagged is not None
            )
        )
        page = text_of(await op.get(f"/sites/{site.uid}/chargers/MUTE"))
        assert "Flagged: it does not answer its SetChargingProfile" in page
        assert "counts it at its maximum current until it answers" in page
        assert "supports OCPP smart charging" in page


async def test_the_cpms_cap_shows_on_the_charging_station(srv: RunningServer) -> None:
    async with SimulatedCpms() as cpms:
        site, url = await make_site(srv, cpms.url)
        await srv.runtime.loadmgmt.configure(site.uid, TREE)
        lm = srv.runtime.loadmgmt
        async with (
            await signed_in(srv, "op@example.com", "operator") as op,
            SimulatedCharger(url, "CAP", "1.6") as sim,
        ):
            await sim.boot()
            tx = await sim.start_transaction(1, "TAG")
            result = await cpms.call(
                "CAP",
                call16.SetChargingProfile(
                    connector_id=1,
                    cs_charging_profiles={
                        "chargingProfileId": 1,
                        "stackLevel": 0,
                        "transactionId": tx,
                        "chargingProfilePurpose": "TxProfile",
                        "chargingProfileKind": "Relative",
                        "chargingSchedule": {
                            "chargingRateUnit": "A",
                            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 20}],
                        },
                    },
                ),
            )
            assert result.status == "Accepted"
            await wait_for(
                lambda: any(
                    "capped_by_cpms" in c.reason_kinds for c in lm.status(site.uid).connectors
                )
            )
            page = text_of(await op.get(f"/sites/{site.uid}/chargers/CAP"))
            assert "Its CPMS limits connector 1 to 20 A with its own charging profile" in page
            assert "Capped by the CPMS" in page
            tab = text_of(await op.get(f"/sites/{site.uid}/load-management"))
            assert 'data-reason="capped_by_cpms"' in tab
