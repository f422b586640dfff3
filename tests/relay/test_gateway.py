"""Gateway sites end to end: a cloud HARMON-E and a box on 127.0.0.1, the WAN between them
(and in front of the CPMS) a TCP proxy the test cuts and restores, chargers simulated with
the `ocpp` package (issue 12)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from certs import make_ca
from console_support import ConsoleClient, signed_in
from gateway_support import box, box_config, cloud, free_port, proxy_to, trust
from pymodbus.client import AsyncModbusTcpClient
from support import PATIENCE, harmone_server
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harmone.errors import ConfigError
from harmone.gateway.box import INSTALLER_EMAIL, RunningBox
from harmone.gateway.protocol import LINK_PATH, REFUSED_CLOSE
from harmone.sim import SimulatedCharger, SimulatedCpms


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = PATIENCE) -> Any:
    """Poll `check` until it returns something truthy (a guard against hanging only)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {value!r}")
        await asyncio.sleep(0.05)


async def gateway_site(
    api: httpx.AsyncClient, box_port: int, cpms_url: str | None
) -> dict[str, Any]:
    r = await api.post(
        "/api/v1/sites",
        json={
            "name": "Depot",
            "type": "gateway",
            "gateway_host": f"127.0.0.1:{box_port}",
            "cpms_url": cpms_url,
        },
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def pairing_code(api: httpx.AsyncClient, uid: str) -> str:
    r = await api.post(f"/api/v1/sites/{uid}/gateway/pairing-code")
    assert r.status_code == 201, r.text
    body = r.json()
    # The one line the console shows: the cloud's URL, the code, a database for the box.
    assert body["command"] == (
        f"harmone gateway --cloud {api.base_url}".rstrip("/")
        + f" --pair {body['code']} --db box.db"
    )
    return str(body["code"])


def log_entries(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["at"], e["charge_point_id"], e["accepted"], e["reason"]) for e in entries]


async def box_log(b: RunningBox) -> list[tuple[Any, ...]]:
    await b.runtime.hub.flush_attempts()
    return [
        (a.at.isoformat().replace("+00:00", "Z"), a.charge_point_id, a.accepted, a.reason)
        for a in await b.runtime.store.attempts.of_site(b.site_uid, limit=1000)
    ]


def _z(value: str) -> str:
    return value.replace("+00:00", "Z")


async def cloud_log(api: httpx.AsyncClient, uid: str) -> list[tuple[Any, ...]]:
    r = await api.get(f"/api/v1/sites/{uid}/connection-log", params={"limit": 1000})
    return [(_z(a), c, ok, why) for a, c, ok, why in log_entries(r.json())]


def charger_view(chargers: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {
        c["id"]: (
            c["connected"],
            c["ocpp_version"],
            c["vendor"],
            tuple((k["id"], k["status"]) for k in c["connectors"]),
        )
        for c in chargers
    }


async def box_chargers(b: RunningBox) -> dict[str, tuple[Any, ...]]:
    chargers = await b.runtime.store.chargers.of_site(b.site_uid)
    return {
        c.id: (
            c.connected,
            c.ocpp_version,
            c.identity.vendor,
            tuple((k.id, k.status) for k in c.connectors),
        )
        for c in chargers
    }


async def cloud_chargers(api: httpx.AsyncClient, uid: str) -> dict[str, tuple[Any, ...]]:
    return charger_view((await api.get(f"/api/v1/sites/{uid}/chargers")).json())


async def test_a_gateway_site_runs_on_its_box_through_a_wan_outage(tmp_path: Path) -> None:
    async with (
        cloud(tmp_path) as (srv, api),
        SimulatedCpms() as cpms,
        proxy_to(int(cpms.url.rsplit(":", 1)[1])) as cpms_wan,
        proxy_to(int(srv.url.rsplit(":", 1)[1])) as cloud_wan,
    ):
        box_port = free_port()
        site = await gateway_site(api, box_port, f"ws://127.0.0.1:{cpms_wan.port}")
        uid = site["uid"]
        assert site["ocpp_url"] == f"wss://127.0.0.1:{box_port}/{uid}"
        code = await pairing_code(api, uid)
        cfg = box_config(tmp_path, f"http://127.0.0.1:{cloud_wan.port}", code)
        async with box(cfg) as b:
            # The installer follows the guide: the URL from the cloud's Control Hub.
            sim = SimulatedCharger(site["ocpp_url"], "GW1", "1.6", ssl_context=trust(b))
            await sim.connect()
            await sim.boot()
            await sim.status(1, "Available")
            await eventually(
                lambda: cloud_chargers(api, uid),
            )
            await eventually(
                lambda: _is(cloud_chargers(api, uid), lambda v: v.get("GW1", (False,))[0])
            )
            health = (await api.get(f"/api/v1/sites/{uid}/gateway")).json()
            assert health["online"] and not health["revoked"] and not health["chargers_stale"]
            assert health["fingerprint"] == b.fingerprint
            assert health["software_version"]
            assert health["clock_offset_seconds"] is not None
            assert abs(health["clock_offset_seconds"]) < 60
            await eventually(
                lambda: _is(
                    api.get(f"/api/v1/sites/{uid}/gateway"),
                    lambda r: r.json()["config_version_applied"] == r.json()["config_version"] >= 1,
                )
            )

            # A configuration edit in the cloud is in force on the box within 5 s.
            started = time.monotonic()
            r = await api.patch(f"/api/v1/sites/{uid}", json={"name": "Depot North"})
            assert r.status_code == 200
            await eventually(
                lambda: _is(b.runtime.sites.get(uid), lambda s: s.name == "Depot North"), 5.0
            )
            took = time.monotonic() - started
            assert took < 5.0
            print(f"cloud edit in force on the box after {took:.2f} s")

            # WAN down: the cloud loses the box, the charger keeps working locally.
            cloud_wan.cut()
            cpms_wan.cut()
            await eventually(
                lambda: _is(
                    api.get(f"/api/v1/sites/{uid}/gateway"), lambda r: not r.json()["online"]
                )
            )
            health = (await api.get(f"/api/v1/sites/{uid}/gateway")).json()
            assert health["chargers_stale"] and health["last_contact"] is not None
            await sim.heartbeat()
            await sim.status(1, "Preparing")
            tx = await sim.start_transaction(1, "TAG-OFFLINE")
            assert isinstance(tx, int)
            await sim.meter_values(1, 1000.0, [16.0, 16.0, 16.0])
            await sim.status(1, "Charging")
            late = SimulatedCharger(site["ocpp_url"], "GW2", "1.6", ssl_context=trust(b))
            await late.connect()
            await late.boot()
            await eventually(lambda: _is(box_chargers(b), lambda v: "GW2" in v and v["GW2"][0]))
            assert b.link.state == "offline"
            # what the cloud must hear waits in the box's outbox
            await eventually(lambda: _is(b.runtime.store.box.backlog(), lambda n: n > 0))

            # WAN back: the cloud catches up exactly, the CPMS gets the journal once.
            cloud_wan.restore()
            cpms_wan.restore()
            await eventually(
                lambda: _is(api.get(f"/api/v1/sites/{uid}/gateway"), lambda r: r.json()["online"])
            )

            async def same_view() -> bool:
                return await cloud_log(api, uid) == await box_log(b) and await cloud_chargers(
                    api, uid
                ) == await box_chargers(b)

            await eventually(same_view)
            entries = await cloud_log(api, uid)
            assert len(entries) == len(set(entries)) == 2  # GW1, then GW2 offline: once each
            assert [e[1] for e in entries].count("GW2") == 1
            view = await cloud_chargers(api, uid)
            assert view["GW1"][0] and view["GW2"][0]
            assert view["GW1"][3] == ((1, "Charging"),)
            await cpms.wait_for("GW1", lambda a, p: a == "MeterValues", PATIENCE)
            assert [a for a, _ in cpms.calls["GW1"]].count("StartTransaction") == 1
            await eventually(lambda: _is(b.runtime.store.box.backlog(), lambda n: n == 0))

            # The message inspector in the cloud shows the box's frames, those of the outage too.
            async def same_frames() -> bool:
                r = await api.get(f"/api/v1/sites/{uid}/chargers/GW1/frames")
                box_texts = [f.text for f in b.runtime.hub.frames(uid, "GW1")]
                return [f["text"] for f in r.json()] == box_texts

            await eventually(same_frames)
            r = await api.get(f"/api/v1/sites/{uid}/chargers/GW1/frames")
            assert any('"TAG-OFFLINE"' in f["text"] for f in r.json())
            await late.close()
            await sim.close()


async def _is(value: Awaitable[Any], test: Callable[[Any], bool]) -> bool:
    return bool(test(await value))


async def test_a_restarted_box_serves_its_chargers_from_the_cached_configuration_without_wan(
    tmp_path: Path,
) -> None:
    async with cloud(tmp_path) as (srv, api), proxy_to(int(srv.url.rsplit(":", 1)[1])) as wan:
        box_port = free_port()
        site = await gateway_site(api, box_port, None)
        uid = site["uid"]
        r = await api.put(
            f"/api/v1/sites/{uid}/chargers/CP-LOCKED/password",
            json={"password": "0123456789abcdef"},
        )
        assert r.status_code == 200
        assert (
            await api.patch(f"/api/v1/sites/{uid}", json={"charger_auth": True})
        ).status_code == 200
        code = await pairing_code(api, uid)
        async with box(box_config(tmp_path, f"http://127.0.0.1:{wan.port}", code)) as b:
            await eventually(
                lambda: _is(
                    api.get(f"/api/v1/sites/{uid}/gateway"),
                    lambda r: r.json()["config_version_applied"] >= 1,
                )
            )
        wan.cut()
        async with box(box_config(tmp_path)) as b:  # no code: as paired, from the cache
            assert b.link.state in ("connecting", "offline")
            sim = SimulatedCharger(
                site["ocpp_url"],
                "CP-LOCKED",
                "1.6",
                ssl_context=trust(b),
                basic_auth=("CP-LOCKED", "0123456789abcdef"),
            )
            await sim.connect()
            boot = await sim.boot()
            assert boot.status == "Accepted"  # answered by the box itself (no CPMS)
            await sim.heartbeat()
            # the cached password hash guards the site: a wrong password is refused
            intruder = SimulatedCharger(
                site["ocpp_url"],
                "CP-LOCKED",
                "1.6",
                ssl_context=trust(b),
                basic_auth=("CP-LOCKED", "wrong-password-0000"),
            )
            with pytest.raises(InvalidStatus) as refused:
                await intruder.connect()
            assert refused.value.response.status_code == 401
            await sim.close()
            assert b.link.state == "offline"


async def test_a_revoked_box_is_refused(tmp_path: Path) -> None:
    async with cloud(tmp_path) as (srv, api):
        site = await gateway_site(api, free_port(), None)
        uid = site["uid"]
        code = await pairing_code(api, uid)
        async with box(box_config(tmp_path, srv.url, code)) as b:
            await eventually(
                lambda: _is(api.get(f"/api/v1/sites/{uid}/gateway"), lambda r: r.json()["online"])
            )
            r = await api.delete(f"/api/v1/sites/{uid}/gateway")
            assert r.status_code == 200 and len(r.json()["revoked"]) == 1
            await eventually(lambda: _is(_const(b.link.state), lambda s: s == "revoked"))
            health = (await api.get(f"/api/v1/sites/{uid}/gateway")).json()
            assert health["revoked"] and not health["online"]
            ident = await b.runtime.store.box.identity()
            assert ident is not None and ident.revoked
            credential = ident.credential
        # Its credential no longer opens a link: told why, then closed.
        async with connect(
            srv.url.replace("http", "ws") + LINK_PATH,
            additional_headers={"Authorization": f"Bearer {credential}"},
            proxy=None,
        ) as ws:
            refused = json.loads(await asyncio.wait_for(ws.recv(), PATIENCE))
            assert refused["type"] == "refused" and "revoked" in refused["detail"]
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), PATIENCE)
            assert ws.close_code == REFUSED_CLOSE


async def _const(value: Any) -> Any:
    return value


async def test_a_bad_or_used_pairing_code_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    async with cloud(tmp_path) as (srv, api):
        site = await gateway_site(api, free_port(), None)
        code = await pairing_code(api, site["uid"])
        cmd = [sys.executable, "-m", "harmone", "gateway", "--cloud", srv.url, "--pair"]
        db = str(tmp_path / "bad.db")  # a plain path, as the pairing command has it
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            "WRONG-CODE-0000-0000",
            "--db",
            db,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), PATIENCE)
        assert proc.returncode == 2
        assert "pairing code unknown, already used or expired" in err.decode(), err.decode()
        # Without a code, a box that was never paired says what to do.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "harmone", "gateway", "--db", db,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), PATIENCE)
        assert proc.returncode == 2
        assert "this box is not paired: create a pairing code" in err.decode(), err.decode()
        # A good code pairs once; used again it is refused.
        async with box(box_config(tmp_path, srv.url, code)):
            pass
        with pytest.raises(Exception, match="already used"):
            async with box(box_config(tmp_path / "second", srv.url, code)):
                pass
        # Only a gateway site gets a code.
        other = await api.post("/api/v1/sites", json={"name": "Cloudy", "type": "cloud"})
        r = await api.post(f"/api/v1/sites/{other.json()['uid']}/gateway/pairing-code")
        assert r.status_code == 409 and "gateway" in r.json()["detail"]
        assert (
            json.loads((await api.get(f"/api/v1/sites/{other.json()['uid']}/gateway")).text)[
                "paired"
            ]
            is False
        )


async def test_the_control_hub_pairs_shows_and_revokes_the_box(tmp_path: Path) -> None:
    async with cloud(tmp_path) as (srv, api):
        site = await gateway_site(api, free_port(), None)
        uid = site["uid"]
        async with await signed_in(srv, "ops@example.com", "operator") as browser:
            page = await browser.get(f"/sites/{uid}/control-hub")
            assert "No box is paired with this site yet." in page.text
            page = await browser.post(f"/sites/{uid}/gateway/pairing-code")
            assert page.status_code == 200, page.text
            found = re.search(
                r'value="harmone gateway --cloud (\S+) --pair (\S+) --db box.db"', page.text
            )
            assert found and found.group(1) == srv.url
            async with box(box_config(tmp_path, found.group(1), found.group(2))) as b:
                await eventually(
                    lambda: _is(
                        browser.get(f"/sites/{uid}/control-hub"),
                        lambda r: '<dt>Link</dt><dd><span class="badge ok">Online' in r.text,
                    )
                )
                page = await browser.get(f"/sites/{uid}/control-hub")
                assert b.fingerprint in page.text
                r = await browser.post(f"/sites/{uid}/gateway/revoke")
                assert r.status_code == 303
                assert r.headers["location"] == f"/sites/{uid}/control-hub?done=revoked"
                await eventually(lambda: _is(_const(b.link.state), lambda s: s == "revoked"))
                page = await browser.get(f"/sites/{uid}/control-hub?done=revoked")
                assert "Gateway box revoked" in page.text
                assert '<dt>Link</dt><dd><span class="badge bad">Revoked' in page.text


LOAD_CONFIG = {
    "tree": {
        "id": "grid",
        "max_current": 63,
        "children": [{"id": "hall", "max_current": 32}],
    },
}


async def test_the_box_serves_dynamic_cluster_limits_over_modbus_tcp(tmp_path: Path) -> None:
    async with cloud(tmp_path) as (srv, api):
        site = await gateway_site(api, free_port(), None)
        uid = site["uid"]
        r = await api.put(f"/api/v1/sites/{uid}/load-management", json=LOAD_CONFIG)
        assert r.status_code == 200, r.text
        code = await pairing_code(api, uid)
        port = free_port()
        cfg = dataclasses.replace(box_config(tmp_path, srv.url, code), modbus_port=port)
        async with box(cfg) as b:
            lm = b.runtime.loadmgmt
            assert lm.config(uid).tree.id == "grid"  # the tree came down from the cloud
            client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5)
            assert await client.connect()
            try:
                read = await client.read_holding_registers(0, count=2)
                assert not read.isError() and read.registers == [63, 32]
                # an energy manager lowers the cluster "hall" to 20 A (function code 6)
                written = await client.write_register(1, 20)
                assert not written.isError()
                assert lm.status(uid).dynamic_limits == {"hall": 20.0}
                read = await client.read_holding_registers(0, count=2)
                assert read.registers == [63, 20]
                # above the configured limit: the configured one stays in force
                await client.write_register(0, 100)
                assert (await client.read_holding_registers(0, count=1)).registers == [63]
                # 0 A suspends; 65535 removes the dynamic limit
                await client.write_register(1, 0)
                assert (await client.read_holding_registers(1, count=1)).registers == [0]
                await client.write_register(1, 0xFFFF)
                assert (await client.read_holding_registers(1, count=1)).registers == [32]
                assert "hall" not in lm.status(uid).dynamic_limits
                # a bad value and a register past the last cluster: Modbus exceptions
                bad = await client.write_register(1, 20000)
                assert bad.isError() and bad.exception_code == 3
                missing = await client.write_register(2, 10)
                assert missing.isError() and missing.exception_code == 2
                assert (await client.read_holding_registers(1, count=1)).registers == [32]
                await client.write_register(1, 16)
            finally:
                client.close()
            # The cloud's load-management status of the site is the box's, as reported.
            await eventually(
                lambda: _is(
                    api.get(f"/api/v1/sites/{uid}/load-management/status"),
                    lambda r: (
                        r.json().get("dynamic_limits") == {"grid": 100.0, "hall": 16.0}
                        and len(r.json()["nodes"]) == 2
                    ),
                )
            )
            reported = (await api.get(f"/api/v1/sites/{uid}/load-management/status")).json()
            assert reported["stale"] is False and reported["reported_at"]
            assert [n["id"] for n in reported["nodes"]] == ["grid", "hall"]
            # ... and so is its time series (the load chart's data)
            await eventually(
                lambda: _is(
                    api.get(f"/api/v1/sites/{uid}/load-management/timeseries"),
                    lambda r: bool(r.json()) and len(r.json()[-1]["nodes"]) == 2,
                )
            )


async def test_the_box_page_shows_the_installer_its_url_chargers_and_link(tmp_path: Path) -> None:
    async with cloud(tmp_path) as (srv, api), proxy_to(int(srv.url.rsplit(":", 1)[1])) as wan:
        site = await gateway_site(api, free_port(), None)
        uid = site["uid"]
        code = await pairing_code(api, uid)
        async with box(box_config(tmp_path, f"http://127.0.0.1:{wan.port}", code)) as b:
            assert b.installer_password  # shown once, at pairing
            sim = SimulatedCharger(site["ocpp_url"], "LAN1", "1.6", ssl_context=trust(b))
            await sim.connect()
            await sim.boot()
            await eventually(lambda: _is(_const(b.link.state), lambda s: s == "online"))
            # the support person in the cloud sees it online on the site's stations tab
            async with await signed_in(srv, "support@example.com", "viewer") as support:
                await eventually(
                    lambda: _is(
                        support.get(f"/sites/{uid}/chargers"),
                        lambda r: "<span data-online-count>1</span>" in r.text and "LAN1" in r.text,
                    )
                )
            wan.cut()  # the page needs no internet
            await eventually(lambda: _is(_const(b.link.state), lambda s: s == "offline"))
            async with ConsoleClient(b.server) as installer:
                # the box's own TLS certificate: the console client trusts it like a charger
                installer.http = httpx.AsyncClient(
                    base_url=b.server.url, verify=trust(b), timeout=10, follow_redirects=False
                )
                r = await installer.login(INSTALLER_EMAIL, b.installer_password)
                assert r.status_code == 303
                page = await installer.get("/box")
                assert page.status_code == 200, page.text
                assert f'value="{site["ocpp_url"]}"' in page.text
                assert '<strong id="box-online">1</strong> of 1' in page.text
                assert '<span class="badge bad">Offline</span>' in page.text
                assert b.fingerprint in page.text
                assert "event(s) waiting for the cloud" in page.text
            await sim.close()
        # In the cloud there is no box page.
        async with await signed_in(srv, "viewer@example.com", "viewer") as browser:
            assert (await browser.get("/box")).status_code == 404


async def test_deleting_a_gateway_site_ends_its_boxs_link(tmp_path: Path) -> None:
    async with cloud(tmp_path) as (srv, api):
        site = await gateway_site(api, free_port(), None)
        uid = site["uid"]
        code = await pairing_code(api, uid)
        async with box(box_config(tmp_path, srv.url, code)) as b:
            await eventually(lambda: _is(_const(b.link.state), lambda s: s == "online"))
            assert (await api.delete(f"/api/v1/sites/{uid}")).status_code == 204
            await eventually(lambda: _is(_const(b.link.state), lambda s: s == "revoked"))
            # the box keeps its own copy of the site (its chargers keep charging)
            assert (await b.runtime.sites.get(uid)).name == "Depot"


async def test_the_link_runs_over_tls_and_trusts_only_the_given_ca(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    files = ca.issue(tmp_path, "cloud")
    (tmp_path / "cloud").mkdir()
    async with harmone_server(tmp_path / "cloud", tls_cert=files.cert, tls_key=files.key) as srv:
        store = srv.runtime.store
        site = await store.sites.create("Depot", "gateway", gateway_host=f"127.0.0.1:{free_port()}")
        code = (await srv.runtime.gateways.create_pairing_code(site.uid)).code
        assert srv.url.startswith("https://")
        # A box that does not trust the cloud's certificate does not pair (nor send its code).
        with pytest.raises(ConfigError, match="certificate"):
            async with box(box_config(tmp_path / "untrusting", srv.url, code)):
                pass
        cfg = dataclasses.replace(box_config(tmp_path, srv.url, code), cloud_ca=ca.cert)
        async with box(cfg) as b:
            await eventually(lambda: _is(_const(b.link.state), lambda s: s == "online"))
            status = await srv.runtime.gateways.status(site.uid)
            assert status.online and status.fingerprint == b.fingerprint


async def test_a_charger_password_removed_in_the_cloud_locks_the_charger_out_of_the_box(
    tmp_path: Path,
) -> None:
    async with cloud(tmp_path) as (srv, api):
        site = await gateway_site(api, free_port(), None)
        uid = site["uid"]
        secret = "0123456789abcdef"
        r = await api.put(f"/api/v1/sites/{uid}/chargers/CP-9/password", json={"password": secret})
        assert r.status_code == 200
        assert (await api.patch(f"/api/v1/sites/{uid}", json={"charger_auth": True})).is_success
        code = await pairing_code(api, uid)
        async with box(box_config(tmp_path, srv.url, code)) as b:
            await eventually(lambda: _is(_const(b.link.state), lambda s: s == "online"))
            sim = SimulatedCharger(
                site["ocpp_url"], "CP-9", ssl_context=trust(b), basic_auth=("CP-9", secret)
            )
            await sim.connect()
            await sim.boot()
            r = await api.delete(f"/api/v1/sites/{uid}/chargers/CP-9/password")
            assert r.status_code == 200
            await asyncio.wait_for(sim.closed.wait(), PATIENCE)  # the box closed it
            with pytest.raises(InvalidStatus) as refused:
                await sim.connect()
            assert refused.value.response.status_code == 401
