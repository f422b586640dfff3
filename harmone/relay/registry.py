"""The relay registry: every live charger link of this process and what the relay knows of
each charger. It is the relay's public surface for the other layers.

What other layers use (the REST API, the console, load management, the sites service):

    links_for_site(uid) -> list[Link]        the connected chargers of a site
    link(site, charger) -> Link | None       one connected charger (close it, call it)
    live_state(site, charger) -> LiveCharger | None
    live_for_site(uid) -> list[LiveCharger]  live state, connected or not
    frames(site, charger) -> list[FrameRecord]   the message inspector's last frames
    frames_anywhere(site, charger)           the same from the node holding it (a cluster)
    call(site, charger, action, payload, timeout)  HARMON-E's own call to a charger
    subscribe()                              live events ("changed" / "frame", key)
    flush_attempts()                         connection attempts written now
    forget(site, charger)                    a cluster's other node holds it now
    site_changed(uid), charger_changed(site, charger)
                                             a site or charger was changed or deleted: the
                                             handshake cache forgets it (call after the
                                             database write)
    listeners                                told about connections and watched frames;
                                             a listener's `watches(uid)` says whether it
                                             needs a site's traffic interpreted, and
                                             `watch_changed(uid)` that this changed

`links` and `live` are read-only views of the same maps. Writes to them happen here only:
the endpoint admits a charger with `admit()`, and a link reports through the `LinkHost`
methods (`detached`, `changed`, `seen`, `observe`). The parts are separate: the state writer
persists in batches (`state_writer.py`), the event bus serves live views (`live_events.py`),
the dialer bounds CPMS handshakes (`dialer.py`), and the directory cache keeps handshakes
off the database (`directory.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sized
from types import MappingProxyType
from typing import Any, Protocol

from harmone.clock import Clock, SystemClock
from harmone.config import RelayConfig
from harmone.errors import ChargerNotConnected
from harmone.metrics import RelayMetrics
from harmone.ocpp.events import WATCHED_ACTIONS
from harmone.ocpp.session import Observe
from harmone.relay.dialer import BoundedDialer, Dialer
from harmone.relay.directory import Directory, DirectoryCache
from harmone.relay.host import Link
from harmone.relay.live_events import ChargerEvent, LiveEvents
from harmone.relay.observer import apply_events
from harmone.relay.state import ChargerKey, FrameRecord, FrameRing, LiveCharger
from harmone.relay.state_writer import StateWriter
from harmone.store.records import Attempt

__all__ = [
    "OWN_ACTIONS",
    "ChargerEvent",
    "Directory",
    "RegistryListener",
    "RelayRegistry",
    "RemoteCalls",
]

log = logging.getLogger(__name__)


#: What the registry and the offline journal read from the traffic of every charger: boot
#: data, connector statuses, the transaction id of a start answered offline. Listeners that
#: watch a site (load management) get every watched action interpreted there.
OWN_ACTIONS = frozenset({"BootNotification", "StatusNotification", "StartTransaction"})


class RegistryListener(Protocol):
    """Told synchronously, in the relay's task: must not block."""

    def watches(self, site_uid: str) -> bool:
        """Whether it needs the meaning of this site's traffic (`observed`)."""
        ...

    def charger_connected(self, live: LiveCharger) -> None: ...

    def charger_disconnected(self, live: LiveCharger) -> None: ...

    def observed(self, live: LiveCharger, obs: Observe) -> None: ...


class RemoteCalls(Protocol):
    """Reaches a charger held by another node (a cluster); raises ChargerNotConnected if none
    holds it."""

    async def call(
        self, site_uid: str, charger_id: str, action: str, payload: Any, timeout: float | None
    ) -> Any: ...

    async def frames(self, site_uid: str, charger_id: str) -> list[FrameRecord]:
        """The message inspector's frames of a charger another node holds (none if none)."""
        ...


class RelayRegistry:
    """See the module docstring."""

    def __init__(
        self,
        directory: Directory,
        config: RelayConfig,
        clock: Clock | None = None,
        dialer: Dialer | None = None,
        metrics: RelayMetrics | None = None,
    ) -> None:
        self.directory = directory
        #: counters read when /metrics is scraped (harmone.metrics)
        self.metrics = metrics or RelayMetrics()
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.dialer: Dialer = dialer or BoundedDialer(config, self.clock)
        self.cache = DirectoryCache(directory, self.clock.monotonic)
        self._links: dict[ChargerKey, Link] = {}
        self._live: dict[ChargerKey, LiveCharger] = {}
        self.links: Mapping[ChargerKey, Link] = MappingProxyType(self._links)
        self.live: Mapping[ChargerKey, LiveCharger] = MappingProxyType(self._live)
        self._locks: dict[ChargerKey, asyncio.Lock] = {}
        self.events = LiveEvents()
        self.writer = StateWriter(
            directory,
            self._live.get,
            self.clock.monotonic,
            config.attempts_kept_per_site,
            self._live.values,
        )
        #: Told about connections and watched frames (load management).
        self.listeners: list[RegistryListener] = []
        self._sweeper: asyncio.Task[None] | None = None
        #: In a cluster: calls to chargers that another node holds go there.
        self.remote: RemoteCalls | None = None

    # -- life --
    async def start(self) -> None:
        # Nothing is connected to a process that just started, whatever the DB says.
        await self.directory.mark_all_disconnected()
        await self.cache.warm()
        self.writer.start()
        self._sweeper = asyncio.create_task(self._keepalive_loop())

    async def stop(self, grace: float = 5.0) -> None:
        """Close every charger (and so every CPMS link) and flush state."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        links = list(self._links.values())
        for link in links:
            link.close_now(1001, "HARMON-E is shutting down")
        if links:
            waits = [asyncio.create_task(link.closed.wait()) for link in links]
            _, pending = await asyncio.wait(waits, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.writer.stop()

    # -- the public surface --
    def link(self, site_uid: str, charger_id: str) -> Link | None:
        return self._links.get((site_uid, charger_id))

    def links_for_site(self, site_uid: str) -> list[Link]:
        return [link for key, link in self._links.items() if key[0] == site_uid]

    def live_state(self, site_uid: str, charger_id: str) -> LiveCharger | None:
        return self._live.get((site_uid, charger_id))

    def live_for_site(self, site_uid: str) -> list[LiveCharger]:
        return [lc for key, lc in self._live.items() if key[0] == site_uid]

    def frames(self, site_uid: str, charger_id: str) -> list[FrameRecord]:
        live = self._live.get((site_uid, charger_id))
        return live.frames.records() if live else []

    async def frames_anywhere(self, site_uid: str, charger_id: str) -> list[FrameRecord]:
        """`frames`, from the node that holds the charger when it is not here (a cluster)."""
        if self.remote is not None and (site_uid, charger_id) not in self._links:
            remote = await self.remote.frames(site_uid, charger_id)
            if remote:
                return remote
        return self.frames(site_uid, charger_id)

    async def call(
        self,
        site_uid: str,
        charger_id: str,
        action: str,
        payload: Any,
        timeout: float | None = None,
    ) -> Any:
        """Send a call to a connected charger and await its answer (see ChargerLink.call)."""
        link = self._links.get((site_uid, charger_id))
        if link is None:
            if self.remote is not None:
                return await self.remote.call(site_uid, charger_id, action, payload, timeout)
            raise ChargerNotConnected(f"charger {charger_id} is not connected")
        return await link.call(action, payload, timeout)

    def subscribe(
        self, maxsize: int = 1000
    ) -> contextlib.AbstractAsyncContextManager[asyncio.Queue[ChargerEvent]]:
        return self.events.subscribe(maxsize)

    async def flush_attempts(self) -> None:
        """Write buffered connection attempts now (so a log read right after sees them)."""
        await self.writer.flush_attempts()

    def watched_actions(self, site_uid: str) -> frozenset[str]:
        """The actions whose frames are interpreted for a charger of this site: decoding and
        validating a payload costs far more than relaying it, so only what someone reads."""
        if any(listener.watches(site_uid) for listener in self.listeners):
            return WATCHED_ACTIONS
        return OWN_ACTIONS

    def watch_changed(self, site_uid: str) -> None:
        """A listener started or stopped watching a site: its connected chargers follow."""
        actions = self.watched_actions(site_uid)
        for link in self.links_for_site(site_uid):
            link.watch(actions)

    def site_changed(self, uid: str) -> None:
        """A site was created, changed or deleted (its chargers too)."""
        self.cache.site_changed(uid)

    def charger_changed(self, site_uid: str, charger_id: str) -> None:
        """A charger was added, changed or deleted other than by connecting."""
        self.cache.charger_changed(site_uid, charger_id)

    def forget(self, site_uid: str, charger_id: str) -> None:
        """Drop what is kept in memory of a charger that is not connected here: a deleted one,
        or (in a cluster) one another node holds now, so that no pending state write or live
        view here contradicts the truth."""
        key = (site_uid, charger_id)
        if key not in self._links:
            self._live.pop(key, None)
        self.cache.charger_changed(site_uid, charger_id)

    # -- the endpoint's side --
    @contextlib.asynccontextmanager
    async def admission(self, key: ChargerKey) -> AsyncIterator[None]:
        """Serialise the admissions of one identity."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(key) is lock:
                del self._locks[key]

    def live_for(self, key: ChargerKey) -> LiveCharger:
        """The live state of a charger being admitted (created on its first connection)."""
        live = self._live.get(key)
        if live is None:
            live = LiveCharger(
                key[0],
                key[1],
                frames=FrameRing(self.config.inspector_frames, self.config.inspector_bytes),
            )
            self._live[key] = live
        return live

    def admit(self, link: Link) -> None:
        """A charger is connected and relayed by `link` from now on."""
        self._links[link.live.key] = link
        self.changed(link.live)
        for listener in self.listeners:
            listener.charger_connected(link.live)

    def log_attempt(self, attempt: Attempt) -> None:
        level = logging.INFO if attempt.accepted else logging.WARNING
        log.log(
            level,
            "site=%s charger=%s from=%s %s%s",
            attempt.site_uid,
            attempt.charge_point_id,
            attempt.remote_addr,
            "accepted" if attempt.accepted else "refused",
            f": {attempt.reason}" if attempt.reason else "",
        )
        self.writer.attempt(attempt)

    # -- LinkHost: what links report --
    def detached(self, link: Link) -> None:
        key = link.live.key
        if self._links.get(key) is link:
            del self._links[key]
            link.live.connected = False
            link.live.upstream_connected = False
            self.changed(link.live)
            for listener in self.listeners:
                listener.charger_disconnected(link.live)

    def changed(self, live: LiveCharger) -> None:
        self.writer.changed(live.key)
        self.events.publish(("changed", live.key))

    @property
    def frame_watchers(self) -> Sized:
        """Who watches frames go by (a link tells `seen` only while this is not empty)."""
        return self.events.subscribers

    def seen(self, live: LiveCharger) -> None:
        # (the state writer finds `last_seen` changes itself: nothing to tell it per frame)
        if self.events.watched:
            self.events.publish(("frame", live.key))

    def observe(self, live: LiveCharger, obs: Observe) -> None:
        if apply_events(live, obs.events, self.clock.now()):
            self.changed(live)
        for listener in self.listeners:
            listener.observed(live, obs)

    # -- keep-alive --
    async def _keepalive_loop(self) -> None:
        # One sweep over every link (not a timer per connection); a side quiet for
        # keepalive_interval is pinged, one silent keepalive_timeout after its ping dropped.
        cfg = self.config
        sweep = min(5.0, cfg.keepalive_interval / 2, cfg.keepalive_timeout / 2)
        while True:
            await asyncio.sleep(sweep)
            links = list(self._links.values())
            for start in range(0, len(links), 500):
                if start:
                    await asyncio.sleep(0)  # 10,000 links in one go would stall the relay
                now = self.clock.monotonic()
                for link in links[start : start + 500]:
                    try:
                        link.keepalive(now, cfg.keepalive_interval, cfg.keepalive_timeout)
                    except Exception:  # one broken socket must not stop the sweep
                        log.exception("site=%s charger=%s keep-alive failed", *link.live.key)
