"""What the box tells its cloud: every charger's state, every connection attempt and the
message inspector's frames, put in the durable outbox (`harmone.store.box`) from what the
relay persisted (frames: from its in-memory inspector).

It reads the box's own database (the relay's state writer keeps it within a fraction of a
second), so the outbox is filled the same way whether the link is up or not, and a box
restart loses nothing: the attempt cursor and the last state digest per charger are stored
with the rows they produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from harmone.domain import Charger, ChargerIdentity
from harmone.gateway.protocol import digest
from harmone.loadmgmt.controller import Sample
from harmone.relay.state import FrameRecord
from harmone.store.store import Store

__all__ = ["Reporter", "charger_body"]

log = logging.getLogger(__name__)


def charger_body(c: Charger) -> dict[str, Any]:
    return {
        "id": c.id,
        "connected": c.connected,
        "upstream_connected": c.upstream_connected,
        "ocpp_version": c.ocpp_version,
        "last_seen": c.last_seen.isoformat() if c.last_seen else None,
        "identity": {k: getattr(c.identity, k) for k in ChargerIdentity.model_fields},
        "connectors": [
            {
                "id": k.id,
                "status": k.status,
                "updated_at": k.updated_at.isoformat() if k.updated_at else None,
            }
            for k in c.connectors
        ],
    }


class Reporter:
    def __init__(
        self,
        store: Store,
        site_uid: str,
        wake: Callable[[], None],
        interval: float = 0.5,
        frames: Callable[[str, str], list[FrameRecord]] | None = None,
        load_status: Callable[[], dict[str, Any] | None] | None = None,
        load_status_interval: float = 5.0,
        load_samples: Callable[[datetime | None], list[Sample]] | None = None,
    ) -> None:
        #: The site's load-management time series since a time (sent up as `loadsample`).
        self._load_samples = load_samples
        self._samples_after: datetime | None = None
        #: The site's load-management status (sent up as `loadstatus` when it changed, at
        #: most every `load_status_interval` seconds).
        self._load_status = load_status
        self.load_status_interval = load_status_interval
        self._load_digest: str | None = None
        self._load_sent_at = -math.inf
        self._store = store
        #: The relay's message-inspector frames of a charger (sent up as `frame` events).
        self._frames = frames
        self._frames_after: dict[str, float] = {}
        self._site_uid = site_uid
        self._wake = wake
        self.interval = interval
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Report every `interval` until `stop()` (which waits for the round in progress: it
        is never cancelled inside a transaction)."""
        while not self._stopping.is_set():
            try:
                await self.once()
            except Exception:  # a database hiccup: the next round picks it up
                log.exception("site=%s gateway reporter round failed", self._site_uid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    def stop(self) -> None:
        self._stopping.set()

    async def once(self) -> int:
        """Put what changed since the last round in the outbox; how many events."""
        added = await self._store.box.enqueue_attempts(self._site_uid)
        chargers = await self._store.chargers.of_site(self._site_uid)
        states = {}
        for c in chargers:
            body = charger_body(c)
            states[c.id] = (digest(body), body)
        added += await self._store.box.enqueue_charger_states(self._site_uid, states)
        if self._frames is not None:
            fresh: list[dict[str, Any]] = []
            for c in chargers:
                after = self._frames_after.get(c.id, 0.0)
                for f in self._frames(self._site_uid, c.id):
                    if f.at > after:
                        fresh.append(
                            {
                                "charger_id": c.id,
                                "at": f.at,
                                "sender": f.sender,
                                "receiver": f.receiver,
                                "text": f.text,
                            }
                        )
                        self._frames_after[c.id] = f.at
            added += await self._store.box.enqueue_frames(fresh)
        if self._load_samples is not None:
            samples = self._load_samples(self._samples_after)
            if samples:
                self._samples_after = samples[-1].at
                added += await self._store.box.enqueue_frames(
                    [
                        {"at": s.at, "nodes": list(s.nodes), "connectors": list(s.connectors)}
                        for s in samples
                    ],
                    kind="loadsample",
                )
        now = time.monotonic()
        if self._load_status is not None and now - self._load_sent_at >= self.load_status_interval:
            status = self._load_status()
            value = digest(status) if status is not None else None
            if status is not None and value != self._load_digest:
                key = f"{self._site_uid}/loadstatus"
                await self._store.box.enqueue_latest("loadstatus", key, status)
                self._load_digest, self._load_sent_at = value, now
                added += 1
        if added:
            self._wake()
        return added
