"""The ASGI application (REST API and console) and what it starts: the relay registry, the
OCPP endpoint (served on the same port outside ASGI, see front_door.py) and load management."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from harmone import __version__
from harmone.clock import SystemClock
from harmone.config import ServerConfig
from harmone.errors import AuthError, Conflict, HarmoneError, NotFound, StoreError
from harmone.loadmgmt.service import LoadManagementService
from harmone.relay.directory import StoreDirectory
from harmone.relay.endpoint import OcppEndpoint
from harmone.relay.registry import RelayRegistry
from harmone.services.accounts import Accounts
from harmone.store import Store
from harmone.web.body_limit import BodyLimit

__all__ = ["HarmoneApp", "Runtime", "create_app", "open_store"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class Runtime:
    """Everything a request handler may need, created at start-up."""

    config: ServerConfig
    store: Store
    #: The relay registry (the relay's public surface, see relay/registry.py).
    hub: RelayRegistry
    #: The URL chargers of cloud sites use, without the site UID.
    cloud_base_url: str
    loadmgmt: LoadManagementService
    extra: dict[str, Any] = field(default_factory=dict)
    #: Users, console sessions and API tokens (holds the cache of verified tokens).
    accounts: Accounts = field(init=False)

    def __post_init__(self) -> None:
        self.accounts = Accounts(self.store)


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
            loadmgmt = LoadManagementService(
                hub,
                store.loadconfig,
                store.loadstate,
                SystemClock(),
                self.config.load_options,
                self.config.load_timing,
            )
            await loadmgmt.start()
            base = self.config.public_url or self._listen_url()
            self.runtime = Runtime(self.config, store, hub, base, loadmgmt)
            self.endpoint = OcppEndpoint(hub, store.journal)
            log.info("HARMON-E %s serving; cloud OCPP URLs start with %s", __version__, base)
            try:
                yield
            finally:
                self.endpoint = None
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
    from harmone.web import console
    from harmone.web.api import router
    from harmone.web.api_charger_auth import router as charger_auth_router
    from harmone.web.api_loadmgmt import router as loadmgmt_router
    from harmone.web.api_users import router as users_router

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with app.lifespan():
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
    api.include_router(router)
    api.include_router(loadmgmt_router)
    api.include_router(users_router)
    api.include_router(charger_auth_router)

    def openapi() -> dict[str, Any]:
        # Validation errors are answered as {"detail": "one readable sentence"} (`invalid`
        # below), not as FastAPI's list of error objects: document what is sent.
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

    @api.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _describe(exc)}, status_code=422)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @api.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @api.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @api.exception_handler(AuthError)
    async def auth_error(_: Request, exc: AuthError) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )

    @api.exception_handler(HarmoneError)
    async def other(_: Request, exc: HarmoneError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    # Last: the console wraps the HTTP error handler above to show HTML pages to browsers.
    console.install(api)
    return api


def _describe(exc: RequestValidationError) -> str:
    """One readable sentence per problem, e.g. "body.cpms_url: must start with ws://"."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        msg = str(err.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            loc, msg = "body", "is not valid JSON"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts) or "invalid request"
