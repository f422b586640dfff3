"""The ASGI application (REST API and console) and what it starts: the relay registry, the
OCPP endpoint (served on the same port outside ASGI, see front_door.py) and load management."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

from harmone import __version__
from harmone.clock import SystemClock
from harmone.config import ServerConfig
from harmone.errors import HarmoneError, StoreError
from harmone.loadmgmt.service import LoadManagementService
from harmone.relay.directory import StoreDirectory
from harmone.relay.endpoint import OcppEndpoint
from harmone.relay.registry import RelayRegistry
from harmone.store import Store
from harmone.web.api import (
    chargers,
    cluster,
    connection_log,
    gateways,
    load_management,
    metrics,
    sites,
    users,
)
from harmone.web.body_limit import BodyLimit
from harmone.web.console.setup import install as install_console
from harmone.web.http_errors import install_error_handlers
from harmone.web.json_numbers import FiniteJsonNumbers
from harmone.web.runtime import Runtime

__all__ = ["HarmoneApp", "Runtime", "create_app", "open_store"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class HarmoneApp:
    """The REST API and the console (FastAPI), and the runtime their lifespan starts."""

    def __init__(
        self, config: ServerConfig, listen_url: Callable[[], str], store: Store | None = None
    ) -> None:
        self.config = config
        self._listen_url = listen_url
        self._store = store
        self.runtime: Runtime | None = None
        self.endpoint: OcppEndpoint | None = None
        self.api = _build_api(self)
        self._http = BodyLimit(self.api, config.max_request_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._http(scope, receive, send)

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        store = self._store or await open_store(self.config.db_url)
        self._store = None  # owned (and closed) by this lifespan from here on
        try:
            hub = RelayRegistry(StoreDirectory(store), self.config.relay)
            await hub.start()

            async def managed_by_box(site_uid: str) -> bool:
                site = await store.sites.find(site_uid)
                return site is not None and site.type == "gateway"

            loadmgmt = LoadManagementService(
                hub,
                store.loadconfig,
                store.loadstate,
                SystemClock(),
                self.config.load_options,
                self.config.load_timing,
                managed_elsewhere=None if self.config.gateway_box else managed_by_box,
            )
            base = self.config.public_url or self._listen_url()
            node = None
            if self.config.cluster is not None:
                # Imported here only: a single node never loads NATS.
                from harmone.cluster.node import connect_node

                node = await connect_node(self.config.cluster, hub, loadmgmt, base)
            await loadmgmt.start()
            if node is not None:
                await node.start()
            self.runtime = Runtime(self.config, store, hub, base, loadmgmt, cluster=node)
            self.endpoint = OcppEndpoint(hub, store.journal)
            # a charger may have journaled on another node before it came here
            self.endpoint.journal_shared = node is not None
            log.info("HARMON-E %s serving; cloud OCPP URLs start with %s", __version__, base)
            try:
                yield
            finally:
                self.endpoint = None
                if node is not None:
                    await node.stop()
                await loadmgmt.stop()
                await hub.stop(self.config.shutdown_grace)
        finally:
            self.runtime = None
            await store.close()


def create_app(
    config: ServerConfig, listen_url: Callable[[], str], store: Store | None = None
) -> HarmoneApp:
    return HarmoneApp(config, listen_url, store)


async def open_store(db_url: str) -> Store:
    """Open and migrate the database, or fail with one line an operator can act on."""
    try:
        store = await Store.open(db_url)
    except HarmoneError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot open database {db_url}: {exc}") from None
    try:
        await store.migrate()
    except Exception as exc:
        await store.close()
        raise StoreError(f"cannot open database {db_url}: {exc}") from None
    return store


def _build_api(app: HarmoneApp) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with app.lifespan():
            if app.runtime is not None and not await app.runtime.accounts.has_admin():
                log.warning(
                    "no admin user in this database: nobody can sign in to the console or "
                    "create API tokens. Create one with: harmone init --db URL --admin-email "
                    "EMAIL --admin-password-file FILE (URL: the same database as harmone serve)"
                )
            yield

    api = FastAPI(
        title="HARMON-E",
        version=__version__,
        description="Transparent OCPP relay with site load management.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    api.state.harmone = app
    for module in (
        sites,
        chargers,
        connection_log,
        load_management,
        users,
        metrics,
        gateways,
        cluster,
    ):
        api.include_router(module.router)

    def openapi() -> dict[str, Any]:
        # Validation errors are answered as {"detail": "one readable sentence"}
        # (`harmone.web.http_errors`), not as FastAPI's list of error objects: document that.
        if api.openapi_schema is None:
            schemas = FastAPI.openapi(api).get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = {
                    "title": "HTTPValidationError",
                    "type": "object",
                    "properties": {"detail": {"title": "Detail", "type": "string"}},
                    "required": ["detail"],
                }
        return api.openapi_schema  # type: ignore[return-value]

    api.openapi = openapi  # type: ignore[method-assign]

    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok" if app.runtime is not None else "starting"}

    install_error_handlers(api)
    api.add_middleware(FiniteJsonNumbers)
    # Last: the console wraps the error handlers above to show HTML pages to browsers.
    install_console(api)
    return api
