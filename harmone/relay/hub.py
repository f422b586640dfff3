"""The relay hub: every live charger link of this process, the live registry, and the
background writer that persists what the relay learns without touching the hot path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection

from harmone.clock import Clock, SystemClock
from harmone.config import RelayConfig
from harmone.errors import ChargerNotConnected
from harmone.ocpp.session import Observe
from harmone.relay.link import ChargerLink
from harmone.relay.observer import apply_events
from harmone.relay.state import ChargerKey, FrameRecord, LiveCharger
from harmone.relay.upstream import dial
from harmone.store.records import Attempt
from harmone.store.store import Store

__all__ = ["ChargerEvent", "HubListener", "RelayHub"]

log = logging.getLogger(__name__)


ChargerEvent = tuple[str, ChargerKey]  # ("changed" | "frame", key)


class HubListener(Protocol):
    """Told synchronously, in the relay's task: must not block."""

    def charger_connected(self, live: LiveCharger) -> None: ...

    def charger_disconnected(self, live: LiveCharger) -> None: ...

    def observed(self, live: LiveCharger, obs: Observe) -> None: ...


class RelayHub:
    """Owns the links; is the only place that maps (site, charger) to a live connection."""

    #: How often changed state is written; last_seen alone is written less often.
    flush_interval = 0.25
    seen_flush_interval = 5.0

    def __init__(self, directory: Store, config: RelayConfig, clock: Clock | None = None) -> None:
        self.directory = directory
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.links: dict[ChargerKey, ChargerLink] = {}
        #: bounds CPMS handshakes in progress (see RelayConfig.max_concurrent_dials)
        self.dial_slots = asyncio.Semaphore(config.max_concurrent_dials)
        self.live: dict[ChargerKey, LiveCharger] = {}
        self._dirty: set[ChargerKey] = set()
        self._seen_dirty: set[ChargerKey] = set()
        self._attempts: list[Attempt] = []
        # Held while a batch of attempts is being written, so that `flush_attempts` returns
        # only once everything logged before it is in the database, including a batch the
        # background writer took a moment earlier.
        self._attempts_writing = asyncio.Lock()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._last_seen_flush = 0.0
        self._locks: dict[ChargerKey, asyncio.Lock] = {}
        self._subscribers: set[asyncio.Queue[ChargerEvent]] = set()
        #: Told about connections and watched frames (load management).
        self.listeners: list[HubListener] = []

    # -- life --
    async def start(self) -> None:
        # Nothing is connected to a process that just started, whatever the DB says.
        await self.directory.chargers.mark_all_disconnected()
        self._writer = asyncio.create_task(self._write_loop())

    async def stop(self, grace: float = 5.0) -> None:
        """Close every charger (and so every CPMS link) and flush state."""
        links = list(self.links.values())
        for link in links:
            await link.close(1001, "HARMON-E is shutting down")
        if links:
            waits = [asyncio.create_task(link.closed.wait()) for link in links]
            _, pending = await asyncio.wait(waits, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        await self._flush(everything=True)

    # -- registry --
    def live_state(self, site_uid: str, charger_id: str) -> LiveCharger | None:
        return self.live.get((site_uid, charger_id))

    def frames(self, site_uid: str, charger_id: str) -> list[FrameRecord]:
        live = self.live.get((site_uid, charger_id))
        return list(live.frames) if live else []

    def live_for_site(self, site_uid: str) -> list[LiveCharger]:
        return [lc for key, lc in self.live.items() if key[0] == site_uid]

    def link(self, site_uid: str, charger_id: str) -> ChargerLink | None:
        """The link of a connected charger, or None."""
        return self.links.get((site_uid, charger_id))

    def links_for_site(self, site_uid: str) -> list[ChargerLink]:
        """The links of a site's connected chargers."""
        return [link for key, link in self.links.items() if key[0] == site_uid]

    def attach(self, link: ChargerLink) -> None:
        self.links[link.live.key] = link
        self.changed(link.live)
        for listener in self.listeners:
            listener.charger_connected(link.live)

    def detach(self, link: ChargerLink) -> None:
        key = link.live.key
        if self.links.get(key) is link:
            del self.links[key]
            link.live.connected = False
            link.live.upstream_connected = False
            self.changed(link.live)
            for listener in self.listeners:
                listener.charger_disconnected(link.live)

    def changed(self, live: LiveCharger) -> None:
        self._dirty.add(live.key)
        self._wake.set()
        self._publish(("changed", live.key))

    def seen(self, live: LiveCharger) -> None:
        self._seen_dirty.add(live.key)
        if self._subscribers:
            self._publish(("frame", live.key))

    def observe(self, live: LiveCharger, obs: Observe) -> None:
        if apply_events(live, obs.events, self.clock.now()):
            self.changed(live)
        for listener in self.listeners:
            listener.observed(live, obs)

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
        self._attempts.append(attempt)
        self._wake.set()

    def lock_for(self, key: ChargerKey) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def release_lock(self, key: ChargerKey, lock: asyncio.Lock) -> None:
        if not lock.locked() and self._locks.get(key) is lock:
            del self._locks[key]

    async def dial(self, *args: Any, **kwargs: Any) -> ClientConnection:
        """`upstream.dial` within the concurrency bound (waiting for a slot if needed)."""
        async with self.dial_slots:
            return await dial(*args, **kwargs)

    # -- HARMON-E's own calls --
    async def call(
        self,
        site_uid: str,
        charger_id: str,
        action: str,
        payload: Any,
        timeout: float | None = None,
    ) -> Any:
        """Send a call to a connected charger and await its answer (see ChargerLink.call)."""
        link = self.links.get((site_uid, charger_id))
        if link is None:
            raise ChargerNotConnected(f"charger {charger_id} is not connected")
        return await link.call(action, payload, timeout)

    # -- live events (console) --
    @contextlib.asynccontextmanager
    async def subscribe(self, maxsize: int = 1000) -> AsyncIterator[asyncio.Queue[ChargerEvent]]:
        queue: asyncio.Queue[ChargerEvent] = asyncio.Queue(maxsize)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    async def flush_attempts(self) -> None:
        """Write buffered connection attempts now (so a log read right after sees them)."""
        async with self._attempts_writing:
            attempts, self._attempts = self._attempts, []
            if attempts:
                try:
                    await self.directory.attempts.add(
                        attempts, keep_per_site=self.config.attempts_kept_per_site
                    )
                except BaseException:
                    self._attempts = attempts + self._attempts
                    raise

    def _publish(self, event: ChargerEvent) -> None:
        for queue in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):  # a slow viewer misses updates
                queue.put_nowait(event)

    # -- persistence --
    async def _write_loop(self) -> None:
        while True:
            # Wake for changes, and at least every seen_flush_interval for last_seen alone.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.seen_flush_interval)
            self._wake.clear()
            try:
                await self._flush()
            except Exception:
                # Keep the relay running when the database hiccups; state stays dirty.
                log.exception("could not persist charger state; will retry")
            await asyncio.sleep(self.flush_interval)

    async def _flush(self, everything: bool = False) -> None:
        now = time.monotonic()
        keys = set(self._dirty)
        if everything or now - self._last_seen_flush >= self.seen_flush_interval:
            keys |= self._seen_dirty
            self._seen_dirty.clear()
            self._last_seen_flush = now
        self._dirty.clear()
        states = [self.live[k].snapshot() for k in keys if k in self.live]
        try:
            if states:
                await self.directory.chargers.save_states(states)
        except BaseException:
            self._dirty |= keys
            raise
        await self.flush_attempts()
