"""What the relay needs from storage, and a cache that keeps handshakes off the database.

`Directory` is the one relay-side interface to storage (today's `Store` satisfies it, however
the store is split behind it). `DirectoryCache` answers the two questions every handshake asks
— which site is this, and which CPMS does this charger use — from memory: a reconnect storm of
thousands of chargers is then bound by CPU, not by database round trips, and the API keeps its
database connections. Entries are dropped when a site or charger changes (the sites service and
the REST handlers call `site_changed` / `charger_changed` through the registry) and, in case a
change went around those, expire after `ttl` seconds (unknown sites after `negative_ttl`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from harmone.store import Store
from harmone.store.records import Attempt, Charger, ChargerState, PasswordCheck, Site

__all__ = ["ChargerRoute", "Directory", "DirectoryCache", "StoreDirectory"]

log = logging.getLogger(__name__)


class Directory(Protocol):
    """What the relay needs from storage (the real `Store` satisfies it)."""

    async def find_site(self, uid: str) -> Site | None: ...

    async def list_sites(self) -> list[Site]: ...

    async def find_charger(self, site_uid: str, charger_id: str) -> Charger | None: ...

    async def list_chargers(self, site_uid: str) -> list[Charger]: ...

    async def save_charger_states(self, states: list[ChargerState]) -> None: ...

    async def add_attempts(self, attempts: list[Attempt], keep_per_site: int = ...) -> None: ...

    async def mark_all_disconnected(self) -> None: ...

    async def verify_password(
        self, site_uid: str, charger_id: str, password: str
    ) -> PasswordCheck: ...


class StoreDirectory:
    """`Directory` over the `Store`, whichever repositories it is split into: the relay
    depends on this interface only."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def find_site(self, uid: str) -> Site | None:
        return await self._store.sites.find(uid)

    async def list_sites(self) -> list[Site]:
        return await self._store.sites.all()

    async def find_charger(self, site_uid: str, charger_id: str) -> Charger | None:
        return await self._store.chargers.find(site_uid, charger_id)

    async def list_chargers(self, site_uid: str) -> list[Charger]:
        return await self._store.chargers.of_site(site_uid)

    async def save_charger_states(self, states: list[ChargerState]) -> None:
        await self._store.chargers.save_states(states)

    async def add_attempts(self, attempts: list[Attempt], keep_per_site: int = 1000) -> None:
        await self._store.attempts.add(attempts, keep_per_site=keep_per_site)

    async def mark_all_disconnected(self) -> None:
        await self._store.chargers.mark_all_disconnected()

    async def verify_password(self, site_uid: str, charger_id: str, password: str) -> PasswordCheck:
        return await self._store.chargers.verify_password(site_uid, charger_id, password)


@dataclass(frozen=True, slots=True)
class ChargerRoute:
    """What a handshake needs to know about a charger: whether it is registered, and its
    own CPMS URL (None: the site's)."""

    known: bool
    cpms_url: str | None = None
    #: its own secondary CPMS URL (None: the site's)
    secondary_cpms_url: str | None = None


_UNKNOWN = ChargerRoute(False)


class DirectoryCache:
    """Sites and charger routes from memory, loaded from `directory` on a miss."""

    def __init__(
        self,
        directory: Directory,
        now: Callable[[], float],
        *,
        ttl: float = 300.0,
        negative_ttl: float = 5.0,
        max_unknown_sites: int = 10_000,
    ) -> None:
        self.directory = directory
        self._now = now
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._max_unknown = max_unknown_sites
        self._sites: dict[str, tuple[Site, float]] = {}
        self._unknown_sites: OrderedDict[str, float] = OrderedDict()
        self._routes: dict[tuple[str, str], tuple[ChargerRoute, float]] = {}
        #: sites whose every charger is in `_routes` (a miss there is an unknown charger)
        self._complete: dict[str, float] = {}
        self.hits = 0
        self.misses = 0

    async def warm(self) -> None:
        """Load every site and charger route in a few queries (at start-up, so that the
        reconnect storm after a restart finds them in memory)."""
        sites = await self.directory.list_sites()
        at = self._now()
        for site in sites:
            self._sites[site.uid] = (site, at)
            for charger in await self.directory.list_chargers(site.uid):
                route = ChargerRoute(True, charger.cpms_url, charger.secondary_cpms_url)
                self._routes[(site.uid, charger.id)] = (route, at)
            self._complete[site.uid] = at
        log.info("relay directory cache: %d site(s), %d charger(s)", len(sites), len(self._routes))

    async def site(self, uid: str) -> Site | None:
        now = self._now()
        cached = self._sites.get(uid)
        if cached is not None and now - cached[1] < self.ttl:
            self.hits += 1
            return cached[0]
        seen = self._unknown_sites.get(uid)
        if seen is not None and now - seen < self.negative_ttl:
            self.hits += 1
            return None
        self.misses += 1
        site = await self.directory.find_site(uid)
        if site is None:
            self._unknown_sites[uid] = now
            self._unknown_sites.move_to_end(uid)
            while len(self._unknown_sites) > self._max_unknown:
                self._unknown_sites.popitem(last=False)
            self._sites.pop(uid, None)
        else:
            self._unknown_sites.pop(uid, None)
            self._sites[uid] = (site, now)
        return site

    async def route(self, site_uid: str, charger_id: str) -> ChargerRoute:
        key = (site_uid, charger_id)
        now = self._now()
        cached = self._routes.get(key)
        if cached is not None and now - cached[1] < self.ttl:
            self.hits += 1
            return cached[0]
        complete = self._complete.get(site_uid)
        if cached is None and complete is not None and now - complete < self.ttl:
            self.hits += 1
            return _UNKNOWN
        self.misses += 1
        charger = await self.directory.find_charger(site_uid, charger_id)
        if charger is None:
            self._routes.pop(key, None)
            return _UNKNOWN
        route = ChargerRoute(True, charger.cpms_url, charger.secondary_cpms_url)
        self._routes[key] = (route, now)
        return route

    def registered(self, site_uid: str, charger_id: str) -> None:
        """A charger was just added by the relay itself."""
        self._routes.setdefault((site_uid, charger_id), (ChargerRoute(True), self._now()))

    def site_changed(self, uid: str) -> None:
        self._sites.pop(uid, None)
        self._unknown_sites.pop(uid, None)
        self._complete.pop(uid, None)
        for key in [k for k in self._routes if k[0] == uid]:
            del self._routes[key]

    def charger_changed(self, site_uid: str, charger_id: str) -> None:
        self._routes.pop((site_uid, charger_id), None)
        self._complete.pop(site_uid, None)
