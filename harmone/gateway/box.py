"""`harmone gateway`: HARMON-E on a box in the site's LAN.

The box runs the same engines as the cloud — OCPP endpoint, relay, offline journal, load
management — on its own SQLite file, for the one gateway site it is paired with, and serves
`wss://` on the port the cloud's Control Hub shows (`wss://{gateway_host}/{uid}`; 443 when
gateway_host names no port). Without --tls-cert/--tls-key it makes a self-signed certificate
next to its database on first start and prints its SHA-256 fingerprint.

Start-up: pair when given a code (`--cloud URL --pair CODE`), else run as paired before; put
the cached configuration in force (no WAN needed), serve, then open the link to the cloud
(`link.py`) and fill the outbox (`reporter.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from harmone.clock import utcnow
from harmone.config import RelayConfig, ServerConfig
from harmone.errors import ConfigError, Conflict, HarmoneError
from harmone.gateway.apply import apply_snapshot, site_uid_of
from harmone.gateway.certs import ensure_certificate, fingerprint
from harmone.gateway.link import BoxLink, pair
from harmone.gateway.modbus import modbus_server
from harmone.gateway.reporter import Reporter
from harmone.loadmgmt.controller import Sample
from harmone.store.store import Store
from harmone.web.api.load_management import status_json
from harmone.web.app import open_store
from harmone.web.runtime import Runtime
from harmone.web.serve import RunningServer, running_server

__all__ = ["INSTALLER_EMAIL", "BoxConfig", "RunningBox", "gateway_port", "run_box", "running_box"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BoxConfig:
    """What `harmone gateway` runs with."""

    db_url: str
    #: The cloud (https://host[:port]) and a one-time pairing code: pair first.
    cloud_url: str | None = None
    pair_code: str | None = None
    host: str = "0.0.0.0"
    #: None: the port of the site's gateway_host (443 when it names none).
    port: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Where a self-signed certificate is kept; None: beside the SQLite file.
    data_dir: Path | None = None
    #: CA certificates (PEM) the cloud's https certificate must chain to; None: the system's.
    cloud_ca: Path | None = None
    relay: RelayConfig = field(default_factory=RelayConfig)
    #: The Modbus TCP server for dynamic cluster limits (`modbus.py`); None: not served.
    modbus_port: int | None = None
    shutdown_grace: float = 5.0
    report_interval: float = 0.5
    link_backoff_max: float = 10.0

    def __post_init__(self) -> None:
        if self.pair_code is not None and not self.cloud_url:
            raise ConfigError("--pair needs --cloud: the cloud URL the pairing command shows")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together: give both or neither")


def gateway_port(gateway_host: str | None) -> tuple[str, int]:
    """(host, port) of a site's gateway_host (`192.168.1.10`, `box.lan:8443`, `[fe80::1]`)."""
    text = (gateway_host or "").strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    return host, int(port) if port.isdigit() else 443


def _data_dir(cfg: BoxConfig) -> Path:
    if cfg.data_dir is not None:
        return cfg.data_dir
    url = make_url(cfg.db_url)
    if url.get_backend_name() == "sqlite" and url.database:
        return Path(url.database).resolve().parent
    return Path.cwd()


def _cloud_ssl(cfg: BoxConfig) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cfg.cloud_ca) if cfg.cloud_ca else None)


@dataclass
class RunningBox:
    server: RunningServer
    link: BoxLink
    reporter: Reporter
    site_uid: str
    fingerprint: str
    cert_file: Path
    #: The installer's console password, made at pairing (None on later starts).
    installer_password: str | None = None

    @property
    def runtime(self) -> Runtime:
        return self.server.runtime


async def _paired_snapshot(cfg: BoxConfig, store: Store) -> dict[str, Any]:
    if cfg.pair_code is not None:
        assert cfg.cloud_url is not None
        paired = await pair(cfg.cloud_url, cfg.pair_code, _cloud_ssl(cfg))
        await store.box.pair(
            cfg.cloud_url, paired.gateway_id, paired.credential, paired.site_uid, utcnow()
        )
        await store.box.save_config(0, paired.snapshot)
        log.info(
            "paired with %s as gateway %s of site %s",
            cfg.cloud_url,
            paired.gateway_id,
            paired.site_uid,
        )
    ident = await store.box.identity()
    if ident is None or ident.config is None:
        raise ConfigError(
            "this box is not paired: create a pairing code on the gateway site's Control Hub "
            "and run the command it shows (harmone gateway --cloud URL --pair CODE --db …)"
        )
    if ident.revoked:
        log.error("this box was revoked in the cloud: serving from the cached configuration")
    return dict(json.loads(ident.config))


#: The box's own console account for installers on the LAN (an admin of the box only).
INSTALLER_EMAIL = "installer@box.local"


async def _installer(rt: Runtime, paired: bool) -> str | None:
    """At pairing: a fresh password for the installer's account on the box (printed once,
    stored only as a hash); later starts leave it alone."""
    if not paired:
        return None
    password = secrets.token_urlsafe(12)
    accounts = rt.accounts
    try:
        await accounts.create_user(INSTALLER_EMAIL, password, "admin")
    except Conflict:
        for account in await accounts.list_accounts():
            if account.user.email == INSTALLER_EMAIL:
                await accounts.update_account(account.user.id, password=password)
    return password


@contextlib.asynccontextmanager
async def running_box(cfg: BoxConfig) -> AsyncIterator[RunningBox]:
    """Run the box inside the current event loop (the CLI and tests)."""
    store = await open_store(cfg.db_url)
    try:
        snapshot = await _paired_snapshot(cfg, store)
        ident = await store.box.identity()
        assert ident is not None
    except BaseException:
        await store.close()
        raise
    site_uid = site_uid_of(snapshot)
    lan_host, lan_port = gateway_port(snapshot["site"].get("gateway_host"))
    if cfg.tls_cert is not None and cfg.tls_key is not None:
        cert, key = cfg.tls_cert, cfg.tls_key
    else:
        cert, key = ensure_certificate(_data_dir(cfg), [lan_host or "localhost"])
    print_ = fingerprint(cert)
    server_cfg = ServerConfig(
        db_url=cfg.db_url,
        host=cfg.host,
        port=cfg.port if cfg.port is not None else lan_port,
        relay=cfg.relay,
        shutdown_grace=cfg.shutdown_grace,
        tls_cert=cert,
        tls_key=key,
        gateway_box=True,
    )
    async with running_server(server_cfg, store) as server:
        rt = server.runtime
        try:
            await apply_snapshot(rt, snapshot)
        except HarmoneError as exc:  # serve anyway: what could be applied is in force
            log.warning("the cached configuration could not be fully applied: %s", exc)
        installer = await _installer(rt, paired=cfg.pair_code is not None)

        in_force = [snapshot]

        async def apply(new: Any) -> None:
            await apply_snapshot(rt, new, previous=in_force[0])
            in_force[0] = new

        link = BoxLink(
            store.box,
            ident.cloud_url,
            ident.credential,
            apply,
            fingerprint=print_,
            ssl_context=_cloud_ssl(cfg),
            started_at=utcnow(),
            backoff_max=cfg.link_backoff_max,
        )
        modbus = None
        if cfg.modbus_port is not None:
            modbus = modbus_server(rt.loadmgmt, site_uid, cfg.host, cfg.modbus_port)
            await modbus.serve_forever(background=True)
            log.info("Modbus TCP server for dynamic limits on %s:%d", cfg.host, cfg.modbus_port)
        rt.box = link

        def load_status() -> dict[str, Any] | None:
            try:
                return status_json(rt.loadmgmt.status(site_uid))
            except HarmoneError:  # no load management configured for the site
                return None

        def load_samples(since: datetime | None) -> list[Sample]:
            try:
                return rt.loadmgmt.timeseries(site_uid, since, 5000)
            except HarmoneError:
                return []

        reporter = Reporter(
            store,
            site_uid,
            link.wake.set,
            cfg.report_interval,
            frames=rt.hub.frames,
            load_status=load_status,
            load_samples=load_samples,
        )
        reporting = asyncio.create_task(reporter.run(), name="gateway reporter")
        linking: asyncio.Task[None] | None = None
        if not ident.revoked:
            linking = asyncio.create_task(link.run(), name="gateway link")
        else:
            link.state = "revoked"
        log.info(
            "gateway box serving site %s on wss://%s:%d (certificate SHA-256 %s)",
            site_uid,
            lan_host,
            server_cfg.port,
            print_,
        )
        try:
            yield RunningBox(server, link, reporter, site_uid, print_, cert, installer)
        finally:
            if modbus is not None:
                await modbus.shutdown()  # type: ignore[no-untyped-call]
            reporter.stop()
            if linking is not None:
                await link.stop(linking, cfg.shutdown_grace)
            await asyncio.gather(reporting, return_exceptions=True)


def run_box(cfg: BoxConfig) -> int:
    """`harmone gateway`: run until SIGINT/SIGTERM, then close every connection; exit 0."""
    return asyncio.run(_run(cfg))


async def _run(cfg: BoxConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_box(cfg) as box:
        if box.installer_password is not None:
            print(
                f"box console (https://THIS-BOX/box): sign in as {INSTALLER_EMAIL} with "
                f"password {box.installer_password} (shown once; keep it)",
                flush=True,
            )
        print(f"certificate SHA-256 fingerprint: {box.fingerprint}", flush=True)
        print(
            f"OCPP URL: {box.runtime.sites.ocpp_url(await box.runtime.sites.get(box.site_uid))}",
            flush=True,
        )
        await stop.wait()
    return 0
