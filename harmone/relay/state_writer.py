"""Batched persistence of what the relay learns, off the hot path.

One background task writes the live state of chargers that changed (within `flush_interval`),
`last_seen` alone less often (`seen_interval`), and the connection attempts, each batch in one
transaction. A charger connecting for the first time is registered by the same batch (the store
adds unknown chargers); its handshake waits for that batch (`register`), so that the charger is
in the database, and in the API's lists, once it is accepted — thousands of first-time
chargers share a handful of transactions instead of one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from harmone.relay.directory import Directory
from harmone.relay.state import ChargerKey, LiveCharger
from harmone.store.records import Attempt, ChargerState

__all__ = ["StateWriter"]

log = logging.getLogger(__name__)


class StateWriter:
    #: How often changed state is written; last_seen alone is written less often.
    flush_interval = 0.25
    seen_interval = 5.0
    #: At most this many charger states per transaction (each slice holds the event loop for
    #: the time it takes to prepare, a few milliseconds).
    batch_size = 200

    def __init__(
        self,
        directory: Directory,
        live: Callable[[ChargerKey], LiveCharger | None],
        now: Callable[[], float],
        attempts_kept_per_site: int,
        everyone: Callable[[], Iterable[LiveCharger]] = tuple,
    ) -> None:
        self._directory = directory
        self._live = live
        #: every live charger: whose `seen_at` moved since it was last written is found by
        #: looking, every `seen_interval`, rather than by being told at every frame
        self._everyone = everyone
        self._now = now
        self._keep = attempts_kept_per_site
        self._dirty: set[ChargerKey] = set()
        self._attempts: list[Attempt] = []
        # Held while a batch of attempts is being written, so that `flush_attempts` returns
        # only once everything logged before it is in the database, including a batch the
        # background writer took a moment earlier.
        self._attempts_writing = asyncio.Lock()
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        #: completed by the next batch that includes the chargers registered since the last
        self._registered: asyncio.Future[None] | None = None
        self._last_seen_flush = now()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop the background task and write everything still pending.

        The task is asked to stop, not cancelled: cancelling it in the middle of a write
        could leave that transaction's connection holding SQLite's write lock.
        """
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            self._urgent.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush(everything=True)

    def changed(self, key: ChargerKey) -> None:
        self._dirty.add(key)
        self._wake.set()

    def attempt(self, attempt: Attempt) -> None:
        self._attempts.append(attempt)
        self._wake.set()

    async def register(self, key: ChargerKey) -> None:
        """Write a new charger with the next batch and wait for it (raises if it failed)."""
        self._dirty.add(key)
        if self._registered is None:
            self._registered = asyncio.get_running_loop().create_future()
        waiter = self._registered
        self._wake.set()
        self._urgent.set()
        await asyncio.shield(waiter)

    async def flush_attempts(self) -> None:
        """Write buffered connection attempts now (so a log read right after sees them)."""
        async with self._attempts_writing:
            attempts, self._attempts = self._attempts, []
            if attempts:
                try:
                    await self._directory.add_attempts(attempts, keep_per_site=self._keep)
                except BaseException:
                    self._attempts = attempts + self._attempts
                    raise

    async def flush(self, everything: bool = False) -> None:
        now = self._now()
        keys = self._dirty
        self._dirty = set()
        waiter, self._registered = self._registered, None
        states: list[ChargerState] = []
        written: list[tuple[LiveCharger, float | None]] = []
        for key in keys:
            live = self._live(key)
            if live is None:
                continue
            states.append(live.snapshot())
            written.append((live, live.seen_at))
        if everything or now - self._last_seen_flush >= self.seen_interval:
            self._last_seen_flush = now
            for live in self._everyone():
                seen_at = live.seen_at
                if seen_at != live.seen_saved and (live.site_uid, live.id) not in keys:
                    # only last_seen moved: a one-column update, not the whole state
                    states.append(ChargerState(live.site_uid, live.id, last_seen=live.last_seen))
                    written.append((live, seen_at))
        try:
            # In slices: one transaction for thousands of chargers (a reconnect storm) would
            # hold the event loop, and every charger and API request with it, for its length.
            for start in range(0, len(states), self.batch_size):
                await self._directory.save_charger_states(states[start : start + self.batch_size])
        except Exception as exc:
            self._dirty |= keys
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
                waiter.exception()  # retrieved here: the handshakes waiting on it see it
            raise
        except BaseException:  # cancelled: the next batch writes it all again
            self._dirty |= keys
            if waiter is not None and self._registered is None:
                self._registered = waiter
            raise
        for live, seen_at in written:
            live.seen_saved = seen_at
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        await self.flush_attempts()

    async def _loop(self) -> None:
        while not self._stopping:
            # Wake for changes, and at least every seen_interval for last_seen alone.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.seen_interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                # Keep the relay running when the database hiccups; state stays dirty.
                log.exception("could not persist charger state; will retry")
            # Let changes gather into the next batch, unless a handshake waits for one.
            if self._registered is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self.flush_interval)
            self._urgent.clear()
