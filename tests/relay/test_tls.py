"""TLS over real sockets on 127.0.0.1: chargers on wss:// (security profile 2), wss:// CPMS
verified against a configured CA, and the start-up checks of the certificate files.

Every certificate is made at test time by a throwaway CA (tests/certs.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import sys
from pathlib import Path

import httpx
import pytest
from certs import TestCA, make_ca
from support import (
    FAST_RELAY,
    PATIENCE,
    RawCpms,
    charger,
    harmone_server,
    make_site,
    recv_json,
    wait_for,
)

from harmone import cli
from harmone.config import RelayConfig, ServerConfig
from harmone.errors import ConfigError
from harmone.services.accounts import Accounts
from harmone.services.sites import ocpp_url
from harmone.web.serve import RunningServer

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return make_ca(tmp_path)


def tls_server(
    tmp_path: Path, ca: TestCA, relay: RelayConfig = FAST_RELAY
) -> contextlib.AbstractAsyncContextManager[RunningServer]:
    """HARMON-E serving wss:// and https:// with a certificate from `ca`."""
    files = ca.issue(tmp_path, "harmone")
    return harmone_server(tmp_path, relay=relay, tls_cert=files.cert, tls_key=files.key)


async def api_client(srv: RunningServer, ca: TestCA) -> httpx.AsyncClient:
    store = srv.runtime.store
    await Accounts(store).create_user("admin@example.com", "correct horse battery", role="admin")
    token = await Accounts(store).create_token("admin@example.com")
    return httpx.AsyncClient(
        base_url=srv.url,
        headers={"Authorization": f"Bearer {token}"},
        verify=ca.client_context(),
        timeout=PATIENCE,
    )


async def test_wss_charger_is_relayed_to_a_wss_cpms_trusted_via_upstream_ca(
    tmp_path: Path, ca: TestCA
) -> None:
    cpms_files = ca.issue(tmp_path, "cpms")
    relay = dataclasses.replace(FAST_RELAY, upstream_ca=ca.cert)
    async with (
        RawCpms(tls=ca.server_context(cpms_files)) as cpms,
        tls_server(tmp_path, ca, relay) as srv,
    ):
        assert srv.runtime.cloud_base_url.startswith("wss://127.0.0.1:")
        assert srv.url.startswith("https://")
        site = await srv.runtime.store.sites.create(
            "TLS", "cloud", cpms_url=cpms.url, charger_auth=True
        )
        url = ocpp_url(site, srv.runtime.cloud_base_url)
        assert url.startswith("wss://")
        await srv.runtime.store.chargers.set_password(site.uid, "CP-1", PASSWORD)
        auth = "Basic " + base64.b64encode(f"CP-1:{PASSWORD}".encode()).decode()
        async with await charger(
            f"{url}/CP-1", ssl=ca.client_context(), additional_headers={"Authorization": auth}
        ) as ws:
            await ws.send('[2,"1","Heartbeat",{}]')
            assert await recv_json(ws) == [3, "1", {"cpms": "answer"}]
            assert cpms.frames["CP-1"] == ['[2,"1","Heartbeat",{}]']
            assert cpms.headers["CP-1"]["Authorization"] == auth
            live = srv.runtime.hub.live_state(site.uid, "CP-1")
            assert live is not None and live.upstream_connected and live.upstream_error is None
        # The REST API is served over the same TLS port.
        async with await api_client(srv, ca) as api:
            r = await api.get(f"/api/v1/sites/{site.uid}")
            assert r.status_code == 200 and r.json()["ocpp_url"] == url


async def test_untrusted_cpms_certificate_shows_on_the_charger(tmp_path: Path, ca: TestCA) -> None:
    other_ca = make_ca(tmp_path, "other-ca")  # the CPMS's CA, which HARMON-E does not know
    cpms_files = other_ca.issue(tmp_path, "cpms")
    async with (
        RawCpms(tls=other_ca.server_context(cpms_files)) as cpms,
        tls_server(tmp_path, ca) as srv,
    ):
        site = await srv.runtime.store.sites.create("TLS", "cloud", cpms_url=cpms.url)
        url = ocpp_url(site, srv.runtime.cloud_base_url)
        async with await charger(f"{url}/CP-1", ["ocpp2.0.1"], ssl=ca.client_context()) as ws:
            # Accepted all the same (like any unreachable CPMS), answered locally.
            assert ws.subprotocol == "ocpp2.0.1"
            await ws.send('[2,"h1","Heartbeat",{}]')
            assert "currentTime" in (await recv_json(ws))[2]
            async with await api_client(srv, ca) as api:
                r = await api.get(f"/api/v1/sites/{site.uid}/chargers/CP-1")
                body = r.json()
            assert body["connected"] and not body["upstream_connected"]
            assert body["upstream_error"].startswith("CPMS certificate not trusted: ")
            assert "--upstream-ca" in body["upstream_error"]
            assert not cpms.conns  # the handshake never completed


async def test_untrusted_cpms_with_a_configured_ca_that_does_not_match(
    tmp_path: Path, ca: TestCA
) -> None:
    other_ca = make_ca(tmp_path, "other-ca")
    cpms_files = other_ca.issue(tmp_path, "cpms")
    relay = dataclasses.replace(FAST_RELAY, upstream_ca=ca.cert)
    async with (
        RawCpms(tls=other_ca.server_context(cpms_files)) as cpms,
        harmone_server(tmp_path, relay=relay) as srv,
    ):
        _, url = await make_site(srv, cpms.url)
        async with await charger(f"{url}/CP-1"):
            live = srv.runtime.hub.live_state(*next(iter(srv.runtime.hub.links)))
            assert live is not None
            await wait_for(lambda: live.upstream_error is not None)
            assert (live.upstream_error or "").startswith("CPMS certificate not trusted: ")


# -- configuration -------------------------------------------------------------------------


def test_tls_files_are_checked_at_start_up(tmp_path: Path, ca: TestCA) -> None:
    good = ca.issue(tmp_path, "good")
    other = ca.issue(tmp_path, "other")
    encrypted = ca.issue(tmp_path, "encrypted", encrypt_key=b"secret")
    db = f"sqlite:///{tmp_path / 'h.db'}"
    assert ServerConfig(db, tls_cert=good.cert, tls_key=good.key).tls
    assert not ServerConfig(db).tls
    cases = [
        ({"tls_cert": good.cert}, "give both or neither"),
        ({"tls_key": good.key}, "give both or neither"),
        ({"tls_cert": tmp_path / "none.crt", "tls_key": good.key}, "No such file"),
        ({"tls_cert": good.cert, "tls_key": tmp_path}, "Is a directory"),
        ({"tls_cert": good.key, "tls_key": good.key}, "no PEM certificate"),
        ({"tls_cert": good.cert, "tls_key": good.cert}, "no usable PEM private key"),
        ({"tls_cert": good.cert, "tls_key": other.key}, "is not the private key of"),
        ({"tls_cert": encrypted.cert, "tls_key": encrypted.key}, "encrypted"),
    ]
    for fields, message in cases:
        with pytest.raises(ConfigError, match=message):
            ServerConfig(db, **fields)  # type: ignore[arg-type]


def test_upstream_ca_is_checked_at_start_up(tmp_path: Path, ca: TestCA) -> None:
    assert RelayConfig(upstream_ca=ca.cert).upstream_ca == ca.cert
    files = ca.issue(tmp_path, "x")
    with pytest.raises(ConfigError, match="no PEM CA certificate"):
        RelayConfig(upstream_ca=files.key)
    with pytest.raises(ConfigError, match="No such file"):
        RelayConfig(upstream_ca=tmp_path / "missing.pem")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "{tmp}/missing.crt", "--tls-key", "{tmp}/x.key"], "--tls-cert"),
        (["--tls-cert", "{tmp}/test-ca.crt"], "give both or neither"),
        (["--upstream-ca", "{tmp}/missing.pem"], "--upstream-ca"),
    ],
)
def test_serve_with_bad_tls_files_exits_2_with_one_line(
    tmp_path: Path, ca: TestCA, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # `harmone serve`'s own function, in process (a real process: the test below)
    code = cli.main(
        [
            "serve",
            *("--db", f"sqlite:///{tmp_path / 'h.db'}", "--port", "0"),
            *(a.format(tmp=tmp_path) for a in args),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("harmone: error: ")
    assert message in lines[0]
    assert not out


async def test_serve_with_bad_tls_files_exits_2_from_a_real_process(
    tmp_path: Path, ca: TestCA
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harmone",
        "serve",
        "--db",
        f"sqlite:///{tmp_path / 'h.db'}",
        "--port",
        "0",
        *("--tls-cert", f"{tmp_path}/test-ca.crt"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    lines = err.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harmone: error: ")
    assert "give both or neither" in lines[0]
    assert not out
