"""What a request handler works with: the running HARMON-E's store, relay, services.

The application (`harmone.web.app`) creates a `Runtime` when it starts; the REST API and the
console reach it through the `RuntimeDep` dependency. Handlers change sites and chargers
through the services (`sites`, `chargers`, `accounts`), never through the relay's links; they
read the relay's live state (`hub.live_state`, `hub.frames`, `hub.subscribe`, …).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Protocol

from fastapi import Depends, HTTPException, Request, status

from harmone.config import ServerConfig
from harmone.loadmgmt.service import LoadManagementService
from harmone.relay.registry import RelayRegistry
from harmone.services.accounts import Accounts
from harmone.services.chargers import ChargerService
from harmone.services.cluster import ClusterView
from harmone.services.gateways import GatewayService
from harmone.services.live_links import ChangeWatcher
from harmone.services.metrics import MetricsService
from harmone.services.sites import SiteService
from harmone.store import Store

__all__ = ["Runtime", "RuntimeDep", "RuntimeSource", "get_runtime"]

log = logging.getLogger(__name__)


class _LoadPlacement:
    """Tells load management of site changes: a site that became a gateway site stops
    running here (its box runs it), one that became a cloud site starts."""

    def __init__(self, service: LoadManagementService) -> None:
        self._service = service
        self._tasks: set[asyncio.Task[None]] = set()

    def site_changed(self, uid: str) -> None:
        task = asyncio.create_task(self._service.placement_changed(uid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def charger_changed(self, site_uid: str, charger_id: str) -> None:
        pass


@dataclass(slots=True)
class Runtime:
    """Everything a request handler may need, created at start-up."""

    config: ServerConfig
    store: Store
    #: The relay registry (the relay's public surface, see relay/registry.py): live state,
    #: frames and events to read; changes to links go through the services only.
    hub: RelayRegistry
    #: The URL chargers of cloud sites use, without the site UID.
    cloud_base_url: str
    loadmgmt: LoadManagementService
    #: On a gateway box: its link to the cloud (None in the cloud).
    box: BoxView | None = None
    #: This node's view of its cluster (`--cluster`); None on a single node.
    cluster: ClusterView | None = None
    #: Users, console sessions and API tokens (holds the cache of verified tokens).
    accounts: Accounts = field(init=False)
    #: Sites and what their changes do to connected chargers.
    sites: SiteService = field(init=False)
    #: Chargers' settings and passwords, and what their changes do to the connection.
    chargers: ChargerService = field(init=False)
    #: Prometheus metrics (`/metrics`, and `--metrics-listen`).
    metrics: MetricsService = field(init=False)
    #: Gateway sites' boxes: pairing, their links, their health (issue 12).
    gateways: GatewayService = field(init=False)

    def __post_init__(self) -> None:
        self.accounts = Accounts(self.store)
        # The registry keeps a cache of sites and chargers for handshakes: it hears of every
        # change. Another party to tell (a gateway, another node) is one more watcher here:
        # the gateways service pushes a changed gateway site's configuration to its box.
        self.gateways = GatewayService(self.store, announce=self.hub.events.publish)
        watchers: list[ChangeWatcher] = [self.hub, self.gateways, _LoadPlacement(self.loadmgmt)]
        self.sites = SiteService(
            self.store,
            self.hub,
            self.cloud_base_url,
            watchers=watchers,
            close_grace=self.config.shutdown_grace,
        )
        self.chargers = ChargerService(
            self.store, self.hub, watchers=watchers, close_grace=self.config.shutdown_grace
        )
        self.metrics = MetricsService(self.hub, self.loadmgmt, self.store)


class BoxView(Protocol):
    """A gateway box's link to its cloud, as the box's own page shows it (`harmone gateway`
    sets `Runtime.box`; None in the cloud)."""

    state: str
    last_error: str | None
    last_contact: datetime | None
    cloud: str

    @property
    def fingerprint(self) -> str | None: ...


class RuntimeSource(Protocol):
    """Holds the runtime while HARMON-E runs (None while it starts or stops)."""

    @property
    def runtime(self) -> Runtime | None: ...


def get_runtime(request: Request) -> Runtime:
    source: RuntimeSource = request.app.state.harmone
    runtime = source.runtime
    if runtime is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "HARMON-E is starting")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
