"""The relay's event bus for live views: which chargers changed or sent a frame.

The console's server-sent event streams subscribe here. Publishing never blocks the relay: a
subscriber whose queue is full misses updates (it re-reads the state it shows anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

from harmone.relay.state import ChargerKey

__all__ = ["ChargerEvent", "LiveEvents"]

ChargerEvent = tuple[Literal["changed", "frame"], ChargerKey]


class LiveEvents:
    def __init__(self) -> None:
        #: the subscribers' queues (one set for ever, changed in place: a link may keep it)
        self.subscribers: set[asyncio.Queue[ChargerEvent]] = set()

    @property
    def watched(self) -> bool:
        """Whether anyone listens (frames are announced only then: they are many)."""
        return bool(self.subscribers)

    def publish(self, event: ChargerEvent) -> None:
        for queue in self.subscribers:
            with contextlib.suppress(asyncio.QueueFull):  # a slow viewer misses updates
                queue.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self, maxsize: int = 1000) -> AsyncIterator[asyncio.Queue[ChargerEvent]]:
        queue: asyncio.Queue[ChargerEvent] = asyncio.Queue(maxsize)
        self.subscribers.add(queue)
        try:
            yield queue
        finally:
            self.subscribers.discard(queue)
