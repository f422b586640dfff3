"""Each site's load manager on exactly one node: a lease per site in a NATS KV bucket.

* Taking a lease is `create` (it succeeds only if the key is absent); its revision becomes the
  lease's **epoch**, the fencing token. Renewing is `update` with the last revision (CAS), the
  value keeping the epoch. The bucket's TTL removes a lease that is not renewed: a dead or
  paused node's sites are free `ttl` seconds after its last renewal.
* The holder stops acting on a lease (`valid` is None: no profile is sent) once it could not
  renew it for `0.8 × ttl`, before anyone else may take it. A late renewal that still
  succeeds (same revision: nobody took the key meanwhile) makes it valid again; a failed one
  loses it.
* Every call a load manager makes carries its epoch; the node that holds the charger refuses
  an epoch lower than the highest it has seen for that site (from the bucket's watch or from
  an earlier call), so a node that was paused past its lease can never send a profile after a
  newer holder has — the classic fencing token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from harmone.errors import LeaseLost

__all__ = ["Lease", "SiteLeases"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Lease:
    epoch: int
    revision: int
    renewed: float


class SiteLeases:
    """See the module docstring."""

    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        node_id: str,
        ttl: float,
        monotonic: Callable[[], float],
    ) -> None:
        self._js = js
        self.bucket = bucket
        self.node_id = node_id
        self.ttl = ttl
        self._now = monotonic
        self.held: dict[str, Lease] = {}
        #: the highest epoch seen per site (fencing), and who holds it as last seen
        self.epochs: dict[str, int] = {}
        self.holders: dict[str, str] = {}
        self._kv: KeyValue | None = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            self._kv = await self._js.key_value(self.bucket)
        except BucketNotFoundError:
            self._kv = await self._js.create_key_value(
                KeyValueConfig(bucket=self.bucket, ttl=self.ttl, history=1)
            )
        self._watch = asyncio.create_task(self._watch_loop(), name="lease watch")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        kv = self._kv
        if kv is not None:
            for site in list(self.held):
                with contextlib.suppress(Exception):  # best effort: the TTL frees it anyway
                    await kv.delete(site, last=self.held[site].revision)
        self.held.clear()

    def valid(self, site: str) -> int | None:
        """This node's epoch for the site if it may still act on it, else None."""
        lease = self.held.get(site)
        if lease is None or self._now() - lease.renewed >= 0.8 * self.ttl:
            return None
        return lease.epoch

    def holds(self, site: str) -> bool:
        """Whether this node holds the lease, even if it must not act on it just now."""
        return site in self.held

    def admit(self, site: str, epoch: int) -> None:
        """At the node that holds the charger: refuse a stale epoch (LeaseLost)."""
        known = self.epochs.get(site, 0)
        if epoch < known:
            raise LeaseLost(
                f"site {site}: fencing token {epoch} is older than {known}: another node "
                "runs this site's load manager now"
            )
        self.epochs[site] = epoch

    async def tick(self, wanted: Iterable[str]) -> tuple[list[str], list[str]]:
        """Renew what is held, try to take what is wanted and free; (gained, lost)."""
        kv = self._kv
        assert kv is not None, "start() first"
        gained: list[str] = []
        lost: list[str] = []
        wanted = set(wanted)
        for site, lease in list(self.held.items()):
            value = self._value(lease.epoch)
            try:
                if site not in wanted:
                    await kv.delete(site, last=lease.revision)
                    raise LookupError("no longer wanted")
                lease.revision = await kv.update(site, value, last=lease.revision)
                lease.renewed = self._now()
            except Exception as exc:  # any failure: stop acting on it at once
                log.warning("site=%s load-management lease lost: %s", site, exc or type(exc))
                del self.held[site]
                lost.append(site)
        for site in sorted(wanted - set(self.held)):
            started = self._now()
            try:
                revision = await kv.create(site, self._value(None))
            except KeyWrongLastSequenceError:
                continue  # held by another node
            except Exception as exc:
                log.warning("site=%s could not take the lease: %s", site, exc)
                continue
            self.held[site] = Lease(revision, revision, started)
            self._saw(site, self.node_id, revision)
            log.info("site=%s load-management lease taken (epoch %d)", site, revision)
            gained.append(site)
        return gained, lost

    def _value(self, epoch: int | None) -> bytes:
        body: dict[str, Any] = {"node": self.node_id}
        if epoch is not None:
            body["epoch"] = epoch
        return json.dumps(body).encode()

    def _saw(self, site: str, node: str, epoch: int) -> None:
        if epoch >= self.epochs.get(site, 0):
            self.epochs[site] = epoch
            self.holders[site] = node

    async def _watch_loop(self) -> None:
        kv = self._kv
        assert kv is not None
        while True:
            try:
                watcher = await kv.watchall()
                async for entry in watcher:
                    if entry is None or not entry.value:
                        continue
                    try:
                        body = json.loads(entry.value)
                        self._saw(
                            entry.key, str(body["node"]), int(body.get("epoch", entry.revision))
                        )
                    except (ValueError, KeyError, TypeError):
                        log.warning("lease %s: unreadable value", entry.key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease watch failed; watching again")
                await asyncio.sleep(1.0)
