"""Load management inside a running HARMON-E: the one service the API, the console and the relay
talk to.

`LoadManagementService` owns, per managed site, its `SiteLoadState` (fed by the relay hub's typed
events: it is a hub listener), its `SiteController` (the loop that sends profiles) and its meter
poller; it persists each site's running state (`LoadStateRepo`) so that a restart resumes from
what the chargers were last told. It raises the package's errors (`NotFound`, `ConfigError`);
callers map them to their own world (HTTP statuses in `web/http_errors.py`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from harmone.clock import Timer
from harmone.errors import ConfigError, Conflict, HarmoneError, NotFound
from harmone.loadmgmt.config import SiteLoadConfig, parse_config
from harmone.loadmgmt.controller import Sample, SiteController
from harmone.loadmgmt.editing import ConfigEditing
from harmone.loadmgmt.edits import config_version
from harmone.loadmgmt.gate import SiteGate
from harmone.loadmgmt.history import MinuteSummary
from harmone.loadmgmt.meters import MeterPoller, measurement_from_push
from harmone.loadmgmt.model import AllocationOptions, LimitKind, Measurement, MeterState
from harmone.loadmgmt.snapshot import restore
from harmone.loadmgmt.snapshot import snapshot as take_snapshot
from harmone.loadmgmt.state import NO_ANSWER, OVERDRAW, SiteLoadState, Timing
from harmone.loadmgmt.status_parts import (
    ChargerStatus,
    ConnectorStatus,
    LimitOrigin,
    NodeStatus,
    SiteLoadStatus,
    node_paths,
    timing_summary,
)
from harmone.metrics import LoadMetrics
from harmone.ocpp.framing import MessageType
from harmone.ocpp.session import Observe
from harmone.ocpp.versions import OcppVersion
from harmone.relay.registry import RelayRegistry
from harmone.relay.state import LiveCharger
from harmone.store.loadconfig import LoadConfigRepo
from harmone.store.loadstate import LoadStateRepo

__all__ = [
    "ChargerStatus",
    "ConnectorStatus",
    "LimitOrigin",
    "LoadManagementService",
    "NodeStatus",
    "SiteLoadStatus",
]

log = logging.getLogger(__name__)

#: How often changed running state is written, s (increases are written before they are sent).
PERSIST_INTERVAL = 1.0


@dataclass(slots=True)
class _Site:
    controller: SiteController
    poller: MeterPoller | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    written: dict[str, Any] | None = None
    limit_origins: dict[str, LimitOrigin] = field(default_factory=dict)


class LoadManagementService:
    def __init__(
        self,
        hub: RelayRegistry,
        configs: LoadConfigRepo,
        states: LoadStateRepo | None,
        clock: Timer,
        options: AllocationOptions | None = None,
        timing: Timing | None = None,
        metrics: LoadMetrics | None = None,
        managed_elsewhere: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.hub = hub
        #: Whether a site's load is managed by another process (the cloud: a gateway site's
        #: box). Such a site's configuration is kept and edited here but not run: no
        #: controller, no meter polling, no profiles sent from here.
        self._managed_elsewhere = managed_elsewhere
        self._elsewhere: dict[str, SiteLoadConfig] = {}
        #: what each site's controller counts, read when /metrics is scraped
        self.metrics = metrics or LoadMetrics()
        self.configs = configs
        self.states = states
        self.clock = clock
        self.options = options or AllocationOptions()
        self.timing = timing or Timing()
        self._sites: dict[str, _Site] = {}
        self._writer: asyncio.Task[None] | None = None
        #: one configuration change at a time, so that an edit reads what it changes
        self._config_lock = asyncio.Lock()
        #: the console's changes, a part of the configuration at a time
        self.editing = ConfigEditing(self)
        #: set in a cluster (before start): only the sites whose lease this node holds run here
        self.gate: SiteGate | None = None

    # -- life ------------------------------------------------------------------------------------
    async def start(self) -> None:
        saved = await self.states.all() if self.states is not None else {}
        for site_uid, raw in (await self.configs.all()).items():
            if self.gate is not None:
                break  # in a cluster, a site starts here when its lease is taken (`adopt`)
            try:
                config = parse_config(raw)
            except ConfigError as exc:
                log.error(
                    "site=%s stored load management configuration is invalid: %s", site_uid, exc
                )
                continue
            if await self._is_elsewhere(site_uid):
                self._elsewhere[site_uid] = config
                continue
            await self._install(site_uid, config, saved.get(site_uid))
        self.hub.listeners.append(self)
        if self.states is not None:
            self._writer = asyncio.create_task(self._write_loop(), name="loadmgmt state writer")

    async def stop(self) -> None:
        if self in self.hub.listeners:
            self.hub.listeners.remove(self)
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        for site_uid, site in self._sites.items():
            if site.poller is not None:
                await site.poller.stop()
            await site.controller.stop()
            try:
                await self.persist(site_uid)
            except HarmoneError:
                log.exception("site=%s could not persist the load state on shutdown", site_uid)

    # -- configuration -------------------------------------------------------------------------
    async def configure(self, site_uid: str, raw: Mapping[str, Any]) -> SiteLoadConfig:
        """Validate and store a site's configuration and put it in force (ConfigError if bad)."""
        async with self._config_lock:
            return await self._configure(site_uid, raw)

    async def edit(
        self,
        site_uid: str,
        change: Callable[[dict[str, Any]], Mapping[str, Any]],
        version: str | None = None,
    ) -> SiteLoadConfig:
        """Change part of the configuration in force (`harmone.loadmgmt.edits`): `change` gets
        its JSON and returns the new one, validated and stored as a whole. With `version`
        (`edits.config_version` of what the change was prepared on), a configuration changed
        meanwhile is refused with Conflict instead of being overwritten. NotFound when the site
        has no configuration, ConfigError when the result is not valid."""
        async with self._config_lock:
            current = self.config(site_uid).to_json()
            if version is not None and config_version(current) != version:
                raise Conflict(
                    "the load management configuration was changed meanwhile (by someone "
                    "else, or in another window): nothing was saved"
                )
            return await self._configure(site_uid, change(current))

    async def create(self, site_uid: str, raw: Mapping[str, Any]) -> SiteLoadConfig:
        """`configure`, for a site without a configuration (Conflict if it has one)."""
        async with self._config_lock:
            if site_uid in self._sites or site_uid in self._elsewhere:
                raise Conflict("load management is already set up for this site")
            return await self._configure(site_uid, raw)

    async def _configure(self, site_uid: str, raw: Mapping[str, Any]) -> SiteLoadConfig:
        config = parse_config(raw)
        await self.configs.put(site_uid, config.to_json())
        if await self._is_elsewhere(site_uid):
            self._elsewhere[site_uid] = config
            log.info("site=%s load management configuration stored; its box runs it", site_uid)
            return config
        if self.gate is not None:
            self.gate.config_changed(site_uid)
            if not self.gate.owns(site_uid):
                return config
        await self._install(site_uid, config, None)
        return config

    async def _is_elsewhere(self, site_uid: str) -> bool:
        return self._managed_elsewhere is not None and await self._managed_elsewhere(site_uid)

    async def placement_changed(self, site_uid: str) -> None:
        """A site changed (its type perhaps): run its load management here, or stop and
        leave it to its box."""
        async with self._config_lock:
            elsewhere = await self._is_elsewhere(site_uid)
            if elsewhere and site_uid in self._sites:
                site = self._sites.pop(site_uid)
                if site.poller is not None:
                    await site.poller.stop()
                await site.controller.stop()
                self._elsewhere[site_uid] = site.controller.config
                self.hub.watch_changed(site_uid)
            elif not elsewhere and site_uid in self._elsewhere:
                config = self._elsewhere.pop(site_uid)
                if await self.configs.get(site_uid) is not None:  # not deleted
                    await self._install(site_uid, config, None)

    def runs_here(self, site_uid: str) -> bool:
        """Whether this process runs the site's load management (False for a gateway site in
        the cloud, whose box runs it, and for a site without a configuration)."""
        return site_uid in self._sites

    async def adopt(self, site_uid: str) -> None:
        """The lease was taken here: run the site from what is stored (again: reload)."""
        raw = (await self.configs.all()).get(site_uid)
        if raw is not None:
            fresh = site_uid not in self._sites
            saved = (await self.states.all()).get(site_uid) if self.states and fresh else None
            await self._install(site_uid, parse_config(raw), saved)
            if fresh and self.gate is not None:
                state = self._sites[site_uid].controller.state
                for charger_id, version in self.gate.connected_elsewhere(site_uid):
                    state.connected(charger_id, OcppVersion(version), True)

    async def drop(self, site_uid: str) -> None:
        """The lease is gone: stop at once and write nothing (the next holder writes)."""
        site = self._sites.pop(site_uid, None)
        if site is not None:
            if site.poller is not None:
                await site.poller.stop()
            await site.controller.stop()

    def watches(self, site_uid: str) -> bool:
        """The relay interprets the traffic of managed sites only (registry listener)."""
        return site_uid in self._sites

    def config(self, site_uid: str) -> SiteLoadConfig:
        elsewhere = self._elsewhere.get(site_uid)
        return elsewhere or self._site(site_uid).controller.config

    def controller(self, site_uid: str) -> SiteController:
        """The site's control loop (tests and benchmarks read what it sent)."""
        return self._site(site_uid).controller

    def _site(self, site_uid: str) -> _Site:
        site = self._sites.get(site_uid)
        if site is None:
            raise NotFound(
                "load management is not configured for this site: PUT its configuration first"
            )
        return site

    async def _install(
        self, site_uid: str, config: SiteLoadConfig, saved: dict[str, Any] | None
    ) -> None:
        site = self._sites.get(site_uid)
        if site is None:
            state = self._restored(site_uid, saved)
            site = self._sites[site_uid] = _Site(self._new_controller(site_uid, config, state))
            self.hub.watch_changed(site_uid)  # its chargers' traffic is interpreted from now on
            for (uid, _), link in self.hub.links.items():
                if uid == site_uid and link.live.ocpp_version:
                    # already past its boot
                    state.connected(link.live.id, OcppVersion(link.live.ocpp_version), True)
            site.controller.start()
        else:
            site.controller.reconfigure(config)
        if site.poller is not None:
            await site.poller.stop()
            site.poller = None
        if config.meters:

            def measured(m: Measurement) -> None:
                self.measurement(site_uid, m)

            site.poller = MeterPoller(config.meters.values(), measured, clock=self.clock)
            site.poller.start()

    @staticmethod
    def _restored(site_uid: str, saved: dict[str, Any] | None) -> SiteLoadState:
        if not saved:
            return SiteLoadState()
        try:
            state = restore(saved)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("site=%s stored load state is unreadable, starting afresh: %s", site_uid, exc)
            return SiteLoadState()
        running = sum(len(ch.txs) for ch in state.chargers.values())
        log.info("site=%s load state restored: %d running transaction(s)", site_uid, running)
        return state

    def _new_controller(
        self, site_uid: str, config: SiteLoadConfig, state: SiteLoadState
    ) -> SiteController:
        async def send(charger_id: str, payload: dict[str, Any]) -> Any:
            if self.gate is not None:
                args = (site_uid, charger_id, "SetChargingProfile", payload)
                return await self.gate.send(*args, self.timing.call_timeout)
            return await self.hub.call(
                site_uid,
                charger_id,
                "SetChargingProfile",
                payload,
                timeout=self.timing.call_timeout,
            )

        async def persist() -> None:
            await self.persist(site_uid)

        return SiteController(
            site_uid,
            config,
            state,
            send,
            self.clock,
            self.options,
            self.timing,
            persist=persist if self.states is not None else None,
            metrics=self.metrics.site(site_uid),
        )

    # -- inputs ----------------------------------------------------------------------------------
    def measurement(self, site_uid: str, m: Measurement) -> None:
        site = self._sites.get(site_uid)
        if site is not None:
            site.controller.state.measurement(m)
            site.controller.poke()

    def push_reading(self, site_uid: str, node_id: str, payload: Mapping[str, Any]) -> None:
        """A pushed reading of a node's building load (NotFound, ConfigError)."""
        self._node(site_uid, node_id)
        self.measurement(site_uid, measurement_from_push(node_id, payload, self.clock.now()))

    def set_dynamic_limit(
        self, site_uid: str, node_id: str, limit: float | None, by: str | None = None
    ) -> None:
        """An external limit on a node; None removes it, 0 suspends charging below it. `by`
        says who set it (shown with the limit)."""
        ctl = self._node(site_uid, node_id)
        if limit is not None and not (limit >= 0 and math.isfinite(limit)):
            raise ConfigError("limit must be a finite number >= 0")
        ctl.state.set_dynamic_limit(node_id, limit)
        origins = self._sites[site_uid].limit_origins
        if limit is None:
            origins.pop(node_id, None)
        else:
            origins[node_id] = LimitOrigin(by, self.clock.now())
        ctl.poke()

    def _node(self, site_uid: str, node_id: str) -> SiteController:
        if site_uid in self._elsewhere:
            raise Conflict("this gateway site's load is managed by its box: set it there")
        ctl = self._site(site_uid).controller
        if node_id not in {n.id for n in ctl.config.tree.walk()}:
            raise NotFound(f"no node {node_id!r} in this site's tree")
        return ctl

    # -- hub listener ----------------------------------------------------------------------------
    def charger_connected(self, live: LiveCharger) -> None:
        site = self._sites.get(live.site_uid)
        if site is not None and live.ocpp_version:
            site.controller.state.connected(live.id, OcppVersion(live.ocpp_version))
            site.controller.poke()

    def charger_disconnected(self, live: LiveCharger) -> None:
        site = self._sites.get(live.site_uid)
        if site is not None:
            site.controller.state.disconnected(live.id)
            site.controller.poke()

    def observed(self, live: LiveCharger, obs: Observe) -> None:
        site = self._sites.get(live.site_uid)
        if site is None or not live.ocpp_version:
            return
        ctl = site.controller
        state = ctl.state
        state.charger(live.id, OcppVersion(live.ocpp_version))
        changed = obs.sender == "charger" and obs.type is MessageType.CALL and state.spoke(live.id)
        settings = ctl.config.settings_for(live.id)
        now = self.clock.now()
        for event in obs.events:
            changed = state.apply(live.id, event, settings, self.timing, now) or changed
        if changed:
            ctl.poke()

    # -- persistence -----------------------------------------------------------------------------
    async def persist(self, site_uid: str) -> None:
        """Write the site's running state if it changed since it was last written."""
        site = self._sites.get(site_uid)
        if site is None or self.states is None:
            return
        async with site.lock:
            snapshot = take_snapshot(site.controller.state)
            if snapshot != site.written:
                await self.states.put(site_uid, snapshot)
                site.written = snapshot

    async def _write_loop(self) -> None:
        while True:
            await self.clock.sleep(PERSIST_INTERVAL)
            for site_uid in list(self._sites):
                try:
                    await self.persist(site_uid)
                except HarmoneError:
                    log.exception("site=%s could not persist the load state; will retry", site_uid)

    # -- what is shown ---------------------------------------------------------------------------
    def timeseries(self, site_uid: str, since: datetime | None, limit: int) -> list[Sample]:
        if site_uid in self._elsewhere:
            return []  # its box keeps the series
        series = self._site(site_uid).controller.series
        return [s for s in series if since is None or s.at > since][-limit:]

    def history(self, site_uid: str, since: datetime | None) -> list[MinuteSummary]:
        """The rounds summarised per minute (lowest limit, highest loads), the last day."""
        if site_uid in self._elsewhere:
            return []
        return self._site(site_uid).controller.minutes.since(since)

    def flags(self) -> dict[str, dict[str, int]]:
        """Per managed site, how many chargers carry each flag: `no_answer` (leaves its
        SetChargingProfile unanswered), `overdraw` (draws more than its limit), `rejected`
        (refused its profile); their draw is reserved instead of their grant."""
        out: dict[str, dict[str, int]] = {}
        for site_uid, site in self._sites.items():
            counts = {"no_answer": 0, "overdraw": 0, "rejected": 0}
            for ch in site.controller.state.chargers.values():
                if ch.flagged == NO_ANSWER:
                    counts["no_answer"] += 1
                elif ch.flagged == OVERDRAW:
                    counts["overdraw"] += 1
                elif ch.flagged:
                    counts["rejected"] += 1
            out[site_uid] = counts
        return out

    def status(self, site_uid: str) -> SiteLoadStatus:
        cfg = self._elsewhere.get(site_uid)
        if cfg is not None:  # nothing runs here: its box reports the real status
            return SiteLoadStatus(cfg.enabled, cfg.policy.value, None, (), (), {}, {}, {}, {})
        site = self._site(site_uid)
        status = _status(site.controller, site.poller, self.options, self.clock.now())
        in_force = status.dynamic_limits
        origins = {k: v for k, v in site.limit_origins.items() if k in in_force}
        return dataclasses.replace(status, dynamic_limit_origins=origins)


def _status(
    ctl: SiteController, poller: MeterPoller | None, options: AllocationOptions, now: datetime
) -> SiteLoadStatus:
    a, state, config = ctl.last, ctl.state, ctl.config
    failed_meters = {
        n.node_id
        for n in (a.nodes if a else ())
        if n.meter in (MeterState.FAILED, MeterState.STALE, MeterState.MISSING)
    }
    held = {
        (c.charger_id, c.connector_id): why
        for c, why in (ctl.last_plan.held if ctl.last_plan else ())
    }
    paths = node_paths(config)
    connectors = []
    for g in a.connectors if a else ():
        ch = state.chargers.get(g.charger_id)
        tx = ch.txs.get(g.connector_id) if ch else None
        kinds = [r.kind.value for r in g.reasons]
        if (
            g.charging
            and not g.reserved
            and not any(
                k in kinds for k in (LimitKind.NODE_LIMIT, LimitKind.SUSPENDED, LimitKind.IMBALANCE)
            )
        ):
            kinds.insert(0, "policy")
        settings = config.settings_for(g.charger_id)
        cap = state.cpms_limit(g.charger_id, g.connector_id, now, settings)
        if cap is not None and g.charging and g.need >= cap - 0.05:
            kinds.append("capped_by_cpms")
        if tx is not None and tx.car_estimate is not None:
            kinds.append(LimitKind.CAR_DRAW.value)
        if ch is not None and ch.flagged:
            kinds.append("flagged")
        path = paths.get(config.settings_for(g.charger_id).node or config.tree.id, ())
        if failed_meters & set(path):
            kinds.append("meter_failed")
        settings = config.settings_for(g.charger_id)
        exposure = (
            state.exposure(g.charger_id, g.connector_id, settings, options, now) if ch else 0.0
        )
        connectors.append(
            ConnectorStatus(
                g.charger_id,
                g.connector_id,
                g.charging,
                g.reserved,
                g.limit_to_send,
                g.per_phase,
                g.need,
                tuple(r.message for r in g.reasons),
                tuple(dict.fromkeys(kinds)),
                tx.limit if tx else (ch.defaults.get(g.connector_id) if ch else None),
                exposure,
                tx.measured if tx else None,
                held.get((g.charger_id, g.connector_id)),
            )
        )
    chargers = {
        cid: ChargerStatus(
            connected=ch.connected,
            flagged=ch.flagged,
            flagged_at=ch.flagged_at,
            stack_level=ch.stack_level,
            tx_default_sent=min(ch.defaults.values()) if ch.defaults else None,
            cpms_caps={str(k): c.amps for k, c in ch.caps.items()},
            transactions={
                str(k): {
                    "transaction_id": t.transaction_id,
                    "charging_since": t.charging_since,
                    "measured": t.measured,
                    "sent_limit": t.limit,
                    "sending": t.sending,
                    "car_max": t.car_max,
                    "car_estimate": t.car_estimate,
                    "energy_wh": None
                    if t.energy_wh is None or t.energy_start_wh is None
                    else t.energy_wh - t.energy_start_wh,
                }
                for k, t in ch.txs.items()
            },
        )
        for cid, ch in state.chargers.items()
    }
    nodes = tuple(
        NodeStatus(
            n.node_id,
            n.limit,
            n.limit_source.value,
            n.meter.value,
            n.load,
            n.charger_load,
            n.non_charger_load,
            n.headroom,
            n.imbalance,
        )
        for n in (a.nodes if a else ())
    )
    return SiteLoadStatus(
        enabled=config.enabled,
        policy=config.policy.value,
        at=a.at if a else None,
        nodes=nodes,
        connectors=tuple(connectors),
        chargers=chargers,
        dynamic_limits=dict(state.dynamic_limits),
        meters=poller.status() if poller else {},
        reaction_time_s=timing_summary(list(ctl.reaction_times)),
        decrease_time_s=timing_summary(list(ctl.decrease_times)),
    )
