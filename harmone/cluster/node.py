"""One HARMON-E node of a cluster: what it says on NATS and what it does with what it hears.

Subjects (JSON bodies; see docs/scale-out.md), each under the cluster's name (`harmone` unless
`--cluster-name` says otherwise; below with that default):

    harmone.nodes.beat          every heartbeat: {node, url, count, led}, every 10th (and the
                                next after a new node appeared) with chargers: [[site, id, version]]
    harmone.nodes.bye           a node stopping cleanly: {node}
    harmone.charger.taken       {node, site, charger, version}: a charger connected here; the
                                node that held it before closes its stale session
    harmone.charger.left        {node, site, charger}
    harmone.node.<id>.frames    request/reply: the message inspector's frames of a charger there
    harmone.node.<id>.call      request/reply: a call to a charger this node holds
                                {site, charger, action, payload, timeout, fence?}
    harmone.site.<uid>.ev       what a site's chargers on this node did (connected,
                                disconnected, watched frames as typed events) for the node
                                that runs the site's load manager
    harmone.site.<uid>.config   the site's load-management configuration was stored

The node is a registry listener (it hears of every local connection and watched frame), the
registry's `RemoteCalls` (calls to chargers elsewhere), and load management's `SiteGate`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from harmone.cluster.codec import decode_observe, encode_observe
from harmone.cluster.directory import NodeDirectory, NodeInfo
from harmone.cluster.leases import SiteLeases
from harmone.cluster.probe import probe_nats
from harmone.config import ClusterConfig
from harmone.errors import (
    CallErrorReceived,
    CallTimeout,
    ChargerNotConnected,
    HarmoneError,
    LeaseLost,
    OcppError,
    RelayError,
)
from harmone.loadmgmt.service import LoadManagementService
from harmone.ocpp.session import Observe
from harmone.relay.registry import RelayRegistry
from harmone.relay.state import FrameRecord, LiveCharger

__all__ = ["ClusterNode", "connect_node"]

log = logging.getLogger(__name__)

_ERRORS: dict[str, type[HarmoneError]] = {
    cls.__name__: cls
    for cls in (CallTimeout, ChargerNotConnected, LeaseLost, RelayError, HarmoneError)
}
#: how often (in heartbeats) the set of sites with load management is read again
_WANTED_EVERY = 3
#: how often (in heartbeats) a heartbeat lists every charger the node holds
_FULL_EVERY = 10


async def connect_node(
    config: ClusterConfig, hub: RelayRegistry, loadmgmt: LoadManagementService, url: str
) -> ClusterNode:
    """Connect to NATS (HarmoneError if unreachable); the node is load management's gate from
    here on, and runs from `start()`."""

    async def error(exc: Exception) -> None:
        # one line, not nats-py's traceback on every reconnect attempt
        log.warning("node=%s NATS: %s", config.node_id, exc or type(exc).__name__)

    # Probed first: nats-py retries an unreachable server forever once reconnects are on.
    await probe_nats(config.nats_url)
    try:
        nc = await asyncio.wait_for(
            nats.connect(
                config.nats_url,
                name=f"harmone-{config.node_id}",
                connect_timeout=3,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                error_cb=error,
            ),
            10,
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise HarmoneError(
            f"cannot reach NATS at {config.nats_url}: {exc or 'no answer in time'}"
        ) from None
    return ClusterNode(config, nc, hub, loadmgmt, url)


class ClusterNode:
    """See the module docstring."""

    def __init__(
        self,
        config: ClusterConfig,
        nc: Client,
        hub: RelayRegistry,
        loadmgmt: LoadManagementService,
        url: str,
    ) -> None:
        self.config = config
        self.id = config.node_id
        #: the first token of every subject: the cluster's name
        self.ns = config.name
        self.nc = nc
        self.hub = hub
        self.loadmgmt = loadmgmt
        self.url = url
        self._now = hub.clock.monotonic
        self.directory = NodeDirectory(self.id, config.heartbeat)
        self.leases = SiteLeases(
            nc.jetstream(), f"{config.name}_site_leases", self.id, config.lease_ttl, self._now
        )
        #: sites with a load-management configuration (in the shared database)
        self.wanted: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None
        #: a node this one had not heard of appeared: send the full list at the next beat
        self._newcomer = False
        loadmgmt.gate = self  # before load management starts: no site runs here unleased

    # -- life --
    async def start(self) -> None:
        await self.leases.start()
        await self.nc.subscribe(f"{self.ns}.nodes.beat", cb=self._on_beat)
        await self.nc.subscribe(f"{self.ns}.nodes.bye", cb=self._on_bye)
        await self.nc.subscribe(f"{self.ns}.charger.taken", cb=self._on_taken)
        await self.nc.subscribe(f"{self.ns}.charger.left", cb=self._on_left)
        await self.nc.subscribe(f"{self.ns}.node.{self.id}.call", cb=self._on_call)
        await self.nc.subscribe(f"{self.ns}.node.{self.id}.frames", cb=self._on_frames)
        await self.nc.subscribe(f"{self.ns}.site.*.ev", cb=self._on_site_event)
        await self.nc.subscribe(f"{self.ns}.site.*.config", cb=self._on_config)
        self.hub.remote = self
        self.hub.listeners.append(self)
        await self._refresh_wanted()
        await self._beat()
        self._loop = asyncio.create_task(self._heartbeat_loop(), name="cluster heartbeat")
        log.info("node=%s joined the cluster at %s", self.id, self.config.nats_url)

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        for site in list(self.leases.held):
            await self.loadmgmt.drop(site)
        await self.leases.stop()
        if self in self.hub.listeners:
            self.hub.listeners.remove(self)
        self.hub.remote = None
        try:
            await self._publish(f"{self.ns}.nodes.bye", {"node": self.id})
            await self.nc.drain()
        except Exception:  # NATS already gone: the others notice the silence
            log.warning("node=%s could not say goodbye on NATS", self.id)

    def status(self) -> dict[str, Any]:
        """What `GET /api/v1/cluster` shows."""
        now = self._now()
        return {
            "node": self.id,
            "name": self.ns,
            "nats_url": self.config.nats_url,
            "nodes": [
                {"id": n.id, "url": n.url, "chargers": n.chargers, "sites_led": list(n.sites_led)}
                for n in self.directory.alive_nodes(now)
            ],
            "leases": dict(sorted(self.leases.holders.items())),
            "sites_led": sorted(self.leases.held),
        }

    # -- periodic --
    async def _heartbeat_loop(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(self.config.heartbeat)
            n += 1
            try:
                if n % _WANTED_EVERY == 0:
                    await self._refresh_wanted()
                await self._beat(full=n % _FULL_EVERY == 0 or self._newcomer)
                self._sweep()
                gained, lost = await self.leases.tick(self.wanted)
                for site in lost:
                    await self.loadmgmt.drop(site)
                for site in gained:
                    await self.loadmgmt.adopt(site)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round must not stop the node's heartbeat
                log.exception("node=%s heartbeat round failed", self.id)

    async def _refresh_wanted(self) -> None:
        wanted = set(await self.loadmgmt.configs.all())
        changed, self.wanted = wanted ^ self.wanted, wanted
        for site in changed:
            self.hub.watch_changed(site)

    async def _beat(self, full: bool = True) -> None:
        # The list of held chargers goes out every _FULL_EVERY beats (and at once when a new
        # node appears); in between, `taken`/`left` keep the others' directories current.
        led = sorted(self.leases.held)
        body: dict[str, Any] = {"node": self.id, "url": self.url, "led": led}
        body["count"] = len(self.hub.links)
        if full:
            self._newcomer = False
            body["chargers"] = [
                [link.live.site_uid, link.live.id, link.live.ocpp_version]
                for link in self.hub.links.values()
            ]
        self.directory.nodes[self.id] = NodeInfo(
            self.id, self._now(), self.url, len(self.hub.links), tuple(led)
        )
        await self._publish(f"{self.ns}.nodes.beat", body)

    def _sweep(self) -> None:
        now = self._now()
        dead = [
            n for n in self.directory.nodes if n != self.id and not self.directory.alive(n, now)
        ]
        for node in dead:
            self._node_gone(node)

    def _node_gone(self, node: str) -> None:
        lost = [k for k, p in self.directory.places.items() if p.node == node]
        self.directory.gone(node)
        log.warning("node=%s node %s is gone with %d charger(s)", self.id, node, len(lost))
        for site, charger in lost:
            if self.leases.holds(site):
                self.loadmgmt.charger_disconnected(LiveCharger(site, charger))

    # -- RegistryListener (local chargers) --
    def watches(self, site_uid: str) -> bool:
        return site_uid in self.wanted

    def charger_connected(self, live: LiveCharger) -> None:
        site, charger, version = live.site_uid, live.id, live.ocpp_version
        self.directory.taken(self.id, site, charger, version)
        body = {"node": self.id, "site": site, "charger": charger, "version": version}
        self._spawn(self._publish(f"{self.ns}.charger.taken", body))
        self._site_event(live, "connected", None)

    def charger_disconnected(self, live: LiveCharger) -> None:
        place = self.directory.holder(live.site_uid, live.id)
        if place is not None and place.node != self.id:
            # taken by another node meanwhile: it is connected there, not gone
            self.hub.forget(live.site_uid, live.id)
            return
        self.directory.left(self.id, live.site_uid, live.id)
        body = {"node": self.id, "site": live.site_uid, "charger": live.id}
        self._spawn(self._publish(f"{self.ns}.charger.left", body))
        self._site_event(live, "disconnected", None)

    def observed(self, live: LiveCharger, obs: Observe) -> None:
        self._site_event(live, "observed", obs)

    def _site_event(self, live: LiveCharger, kind: str, obs: Observe | None) -> None:
        site = live.site_uid
        if site not in self.wanted or self.leases.holds(site):
            return  # no load manager, or it runs here and heard it from the registry itself
        body: dict[str, Any] = {
            "node": self.id,
            "kind": kind,
            "charger": live.id,
            "version": live.ocpp_version,
        }
        if obs is not None:
            body["obs"] = encode_observe(obs)
        self._spawn(self._publish(f"{self.ns}.site.{site}.ev", body))

    # -- what other nodes say --
    async def _on_beat(self, msg: Msg) -> None:
        body = json.loads(msg.data)
        node = str(body["node"])
        if node == self.id:
            return  # this node's own entry is written when it beats
        url, led = str(body.get("url", "")), tuple(body.get("led", ()))
        if node not in self.directory.nodes:
            self._newcomer = True  # it needs this node's chargers: the next beat is full
        if "chargers" not in body:
            self.directory.touch(node, self._now(), int(body.get("count", 0)), url, led)
            return
        chargers = [(str(s), str(c), v) for s, c, v in body["chargers"]]
        self.directory.beat(node, self._now(), chargers, url, led)

    async def _on_bye(self, msg: Msg) -> None:
        node = str(json.loads(msg.data)["node"])
        if node != self.id:
            self._node_gone(node)

    async def _on_taken(self, msg: Msg) -> None:
        body = json.loads(msg.data)
        node, site, charger = str(body["node"]), str(body["site"]), str(body["charger"])
        if node == self.id:
            return
        self.directory.taken(node, site, charger, body.get("version"))
        link = self.hub.link(site, charger)
        if link is not None:
            # The one-identity-one-connection rule, across nodes: the newer connection wins.
            log.info("site=%s charger=%s reconnected on node %s: closing here", site, charger, node)
            link.close_now(1000, f"replaced by a new connection from the same charger ({node})")

    async def _on_left(self, msg: Msg) -> None:
        body = json.loads(msg.data)
        if body["node"] != self.id:
            self.directory.left(str(body["node"]), str(body["site"]), str(body["charger"]))

    async def _on_site_event(self, msg: Msg) -> None:
        site = msg.subject.split(".")[2]
        if not self.leases.holds(site):
            return
        body = json.loads(msg.data)
        node, charger = str(body["node"]), str(body["charger"])
        if node == self.id:
            return
        live = LiveCharger(site, charger, ocpp_version=body.get("version"), connected=True)
        kind = body["kind"]
        if kind == "connected":
            self.loadmgmt.charger_connected(live)
        elif kind == "disconnected":
            place = self.directory.holder(site, charger)
            if place is None or place.node == node:
                self.loadmgmt.charger_disconnected(live)
        elif kind == "observed":
            try:
                obs = decode_observe(body["obs"])
            except (KeyError, TypeError, ValueError) as exc:
                log.warning(
                    "site=%s charger=%s unreadable event from %s: %s", site, charger, node, exc
                )
                return
            self.loadmgmt.observed(live, obs)

    async def _on_config(self, msg: Msg) -> None:
        site = msg.subject.split(".")[2]
        if site not in self.wanted:
            self.wanted.add(site)
            self.hub.watch_changed(site)  # its chargers' frames are interpreted from now on
        if self.owns(site) and json.loads(msg.data).get("node") != self.id:
            await self.loadmgmt.adopt(site)

    # -- SiteGate (load management) --
    def owns(self, site_uid: str) -> bool:
        # The site runs here while the lease is held; sending also needs it valid (`send`).
        return self.leases.holds(site_uid)

    async def send(
        self, site_uid: str, charger_id: str, action: str, payload: Any, timeout: float
    ) -> Any:
        epoch = self.leases.valid(site_uid)
        if epoch is None:
            raise LeaseLost(f"site {site_uid}: this node no longer holds the load-management lease")
        link = self.hub.link(site_uid, charger_id)
        if link is not None:
            self.leases.admit(site_uid, epoch)
            return await link.call(action, payload, timeout)
        return await self._call_remote(site_uid, charger_id, action, payload, timeout, epoch)

    def connected_elsewhere(self, site_uid: str) -> list[tuple[str, str]]:
        return [
            (charger, place.ocpp_version)
            for charger, place in self.directory.of_site(site_uid).items()
            if place.node != self.id and place.ocpp_version
        ]

    def config_changed(self, site_uid: str) -> None:
        self.wanted.add(site_uid)
        self.hub.watch_changed(site_uid)
        self._spawn(self._publish(f"{self.ns}.site.{site_uid}.config", {"node": self.id}))

    # -- RemoteCalls (the registry) --
    async def call(
        self, site_uid: str, charger_id: str, action: str, payload: Any, timeout: float | None
    ) -> Any:
        return await self._call_remote(site_uid, charger_id, action, payload, timeout, None)

    async def _call_remote(
        self,
        site: str,
        charger: str,
        action: str,
        payload: Any,
        timeout: float | None,
        fence: int | None,
    ) -> Any:
        place = self.directory.holder(site, charger)
        if place is None or place.node == self.id:
            raise ChargerNotConnected(f"charger {charger} is not connected to any node")
        limit = timeout if timeout is not None else 2 * self.hub.config.call_timeout
        request = {"site": site, "charger": charger, "action": action, "payload": payload}
        request.update(timeout=limit, fence=fence)
        subject = f"{self.ns}.node.{place.node}.call"
        try:
            msg = await self.nc.request(subject, json.dumps(request).encode(), timeout=limit + 1)
        except NoRespondersError:
            raise ChargerNotConnected(f"charger {charger}: node {place.node} is gone") from None
        except NatsTimeout:
            raise CallTimeout(f"{action} to {charger} on {place.node}: no answer in time") from None
        reply = json.loads(msg.data)
        if "error" not in reply:
            return reply["result"]
        if reply["error"] == "CallErrorReceived":
            raise CallErrorReceived(reply["detail"], reply.get("code"), reply.get("details"))
        raise _ERRORS.get(reply["error"], RelayError)(reply["detail"])

    async def frames(self, site_uid: str, charger_id: str) -> list[FrameRecord]:
        place = self.directory.holder(site_uid, charger_id)
        if place is None or place.node == self.id:
            return []
        subject = f"{self.ns}.node.{place.node}.frames"
        body = json.dumps({"site": site_uid, "charger": charger_id}).encode()
        try:
            msg = await self.nc.request(subject, body, timeout=5)
        except (NoRespondersError, NatsTimeout):
            return []
        return [FrameRecord(float(at), s, r, str(t)) for at, s, r, t in json.loads(msg.data)]

    async def _on_frames(self, msg: Msg) -> None:
        req = json.loads(msg.data)
        records = self.hub.frames(str(req["site"]), str(req["charger"]))
        body = [[f.at, f.sender, f.receiver, f.text] for f in records]
        await msg.respond(json.dumps(body).encode())

    async def _on_call(self, msg: Msg) -> None:
        # Served in its own task: a charger's slow answer must not hold up the others' calls.
        self._spawn(self._serve_call(msg))

    async def _serve_call(self, msg: Msg) -> None:
        reply: dict[str, Any]
        try:
            req = json.loads(msg.data)
            site, charger = str(req["site"]), str(req["charger"])
            if req.get("fence") is not None:
                self.leases.admit(site, int(req["fence"]))
            link = self.hub.link(site, charger)
            if link is None:
                raise ChargerNotConnected(f"charger {charger} is not connected to node {self.id}")
            result = await link.call(str(req["action"]), req["payload"], float(req["timeout"]))
            reply = {"result": result}
        except OcppError as exc:
            reply = {"error": type(exc).__name__, "detail": str(exc), "code": exc.code}
            reply["details"] = exc.details
        except HarmoneError as exc:
            reply = {"error": type(exc).__name__, "detail": str(exc)}
        except (KeyError, TypeError, ValueError) as exc:
            reply = {"error": "HarmoneError", "detail": f"bad call request: {exc}"}
        try:
            await msg.respond(json.dumps(reply).encode())
        except Exception:
            log.warning("node=%s could not answer a call request", self.id)

    # -- helpers --
    async def _publish(self, subject: str, body: dict[str, Any]) -> None:
        await self.nc.publish(subject, json.dumps(body).encode())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
