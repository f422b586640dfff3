"""Load management inside a running HARMON-E: one `SiteController` per managed site, fed by
the relay hub's observations and sending through the relay's own-call mechanism."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from harmone.clock import Clock
from harmone.errors import ConfigError
from harmone.loadmgmt.config import SiteLoadConfig, parse_config
from harmone.loadmgmt.controller import ChargerLoad, ConnectorLoad, SiteController, Timing
from harmone.loadmgmt.meters import MeterPoller
from harmone.loadmgmt.model import AllocationOptions, Measurement
from harmone.loadmgmt.traffic import cpms_cap, current_per_phase
from harmone.ocpp.events import (
    BootAnswered,
    ChargingNeeds,
    ConnectorStatusChanged,
    Event,
    MeterReading,
    ProfileRequested,
    ProfilesCleared,
    TransactionEnded,
    TransactionStarted,
)
from harmone.ocpp.framing import MessageType
from harmone.ocpp.session import Observe
from harmone.ocpp.versions import OcppVersion
from harmone.relay.registry import RelayRegistry
from harmone.relay.state import LiveCharger
from harmone.store.loadconfig import LoadConfigRepo

__all__ = ["LoadManager"]

log = logging.getLogger(__name__)

_ENDED_STATUSES = {"Available", "Unavailable", "Faulted"}


class LoadManager:
    def __init__(
        self,
        hub: RelayRegistry,
        repo: LoadConfigRepo,
        clock: Clock,
        options: AllocationOptions | None = None,
        timing: Timing | None = None,
    ) -> None:
        self.hub = hub
        self.repo = repo
        self.clock = clock
        self.options = options
        self.timing = timing or Timing()
        self.controllers: dict[str, SiteController] = {}
        self.pollers: dict[str, MeterPoller] = {}

    async def start(self) -> None:
        for site_uid, raw in (await self.repo.all()).items():
            try:
                await self._install(site_uid, parse_config(raw))
            except ConfigError as exc:
                log.error(
                    "site=%s stored load management configuration is invalid: %s", site_uid, exc
                )
        self.hub.listeners.append(self)

    async def stop(self) -> None:
        if self in self.hub.listeners:
            self.hub.listeners.remove(self)
        for poller in self.pollers.values():
            await poller.stop()
        self.pollers.clear()
        for ctl in self.controllers.values():
            await ctl.stop()

    async def configure(self, site_uid: str, raw: Mapping[str, Any]) -> SiteLoadConfig:
        config = parse_config(raw)
        await self.repo.put(site_uid, config.to_json())
        await self._install(site_uid, config)
        return config

    async def _install(self, site_uid: str, config: SiteLoadConfig) -> None:
        ctl = self.controllers.get(site_uid)
        if ctl is None:
            ctl = self._controller(site_uid, config)
        else:
            ctl.reconfigure(config)
        old = self.pollers.pop(site_uid, None)
        if old is not None:
            await old.stop()
        if config.meters:
            poller = MeterPoller(config.meters.values(), ctl.measurement, clock=self.clock)
            self.pollers[site_uid] = poller
            poller.start()

    def _controller(self, site_uid: str, config: SiteLoadConfig) -> SiteController:
        async def send(charger_id: str, payload: dict[str, Any]) -> Any:
            return await self.hub.call(
                site_uid,
                charger_id,
                "SetChargingProfile",
                payload,
                timeout=self.timing.call_timeout,
            )

        ctl = SiteController(site_uid, config, send, self.clock, self.options, self.timing)
        self.controllers[site_uid] = ctl
        self.hub.watch_changed(site_uid)
        for (uid, _), link in self.hub.links.items():
            if uid == site_uid and link.live.ocpp_version:
                ctl.connected(link.live.id, OcppVersion(link.live.ocpp_version))
                ctl.chargers[link.live.id].booted = True  # already past its boot
        ctl.start()
        return ctl

    def watches(self, site_uid: str) -> bool:
        """The relay interprets the traffic of managed sites only (registry listener)."""
        return site_uid in self.controllers

    def measurement(self, site_uid: str, m: Measurement) -> None:
        ctl = self.controllers.get(site_uid)
        if ctl is not None:
            ctl.measurement(m)

    # -- hub listener ----------------------------------------------------------------------------
    def charger_connected(self, live: LiveCharger) -> None:
        ctl = self.controllers.get(live.site_uid)
        if ctl is not None and live.ocpp_version:
            ctl.connected(live.id, OcppVersion(live.ocpp_version))

    def charger_disconnected(self, live: LiveCharger) -> None:
        ctl = self.controllers.get(live.site_uid)
        if ctl is not None:
            ctl.disconnected(live.id)

    def observed(self, live: LiveCharger, obs: Observe) -> None:
        ctl = self.controllers.get(live.site_uid)
        if ctl is None or not live.ocpp_version:
            return
        state = ctl.charger(live.id, OcppVersion(live.ocpp_version))
        if obs.sender == "charger" and obs.type is MessageType.CALL and not state.booted:
            state.booted = True  # a charger that reconnects without booting again
        changed = False
        for event in obs.events:
            changed = self._learn(ctl, live.id, state, event) or changed
        if changed:
            ctl.poke()

    def _learn(self, ctl: SiteController, cid: str, state: ChargerLoad, event: Event) -> bool:
        settings = ctl.config.settings_for(cid)
        if isinstance(event, ConnectorStatusChanged):
            if event.connector_id > 0:
                state.connectors.add(event.connector_id)
                tx = state.txs.get(event.connector_id)
                if event.status in _ENDED_STATUSES and tx is not None:
                    self._end(state, tx.transaction_id, event.connector_id)
            return True
        if isinstance(event, TransactionStarted):
            tx = state.txs.get(event.connector_id)
            if tx is None or tx.transaction_id != event.transaction_id:
                self._start(state, event.connector_id, event.transaction_id)
            return True
        if isinstance(event, TransactionEnded):
            self._end(state, event.transaction_id, event.connector_id)
            return True
        if isinstance(event, MeterReading):
            conn: int | None = event.connector_id
            if conn is None:  # 2.x: only the transaction is named
                conn = next(
                    (c for c, t in state.txs.items() if t.transaction_id == event.transaction_id),
                    None,
                )
            if conn is None or conn < 1:
                return False
            if event.transaction_id is not None and conn not in state.txs:
                self._start(state, conn, event.transaction_id)
            tx = state.txs.get(conn)
            if tx is not None:
                amps = current_per_phase(event.samples, settings.phases, settings.voltage)
                if amps is not None:
                    tx.measured = amps
                    tx.measured_at = self.clock.now()
            return True
        if isinstance(event, ChargingNeeds):
            tx = state.txs.get(event.connector_id)
            if tx is not None and event.ev_max_current is not None:
                tx.car_max = event.ev_max_current
                return True
            return False
        if isinstance(event, BootAnswered):
            state.booted = event.accepted
            state.default_sent = None
            return state.booted
        if isinstance(event, ProfileRequested) and event.set_by == "cpms":
            cap = cpms_cap(event.connector_id, event.profile, settings.phases, settings.voltage)
            state.caps[cap.connector_id] = cap
            if (
                cap.purpose in ("TxProfile", "TxDefaultProfile")
                and cap.stack_level >= state.stack_level
            ):
                state.stack_level = cap.stack_level + 1
                self._resend(state)
            log.info(
                "site=%s charger=%s CPMS limits connector %s to %s A (%s, stack level %s)",
                ctl.site_uid,
                cid,
                cap.connector_id,
                cap.amps,
                cap.purpose,
                cap.stack_level,
            )
            return True
        if isinstance(event, ProfilesCleared) and event.set_by == "cpms":
            target = event.connector_id
            for k in [k for k in state.caps if not target or k == target]:
                del state.caps[k]
            # the clear may have removed HARMON-E's own profiles too: send them again
            self._resend(state)
            return True
        return False

    def _start(self, state: ChargerLoad, connector_id: int, transaction_id: str) -> None:
        state.connectors.add(connector_id)
        state.txs[connector_id] = ConnectorLoad(transaction_id, self.clock.now())

    @staticmethod
    def _end(state: ChargerLoad, transaction_id: str, connector_id: int | None) -> None:
        for conn, tx in list(state.txs.items()):
            if tx.transaction_id == transaction_id or connector_id == conn:
                del state.txs[conn]

    @staticmethod
    def _resend(state: ChargerLoad) -> None:
        state.default_sent = None
        for tx in state.txs.values():
            tx.sent_limit = None
