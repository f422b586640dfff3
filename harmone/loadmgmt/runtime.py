"""Load management inside a running HARMON-E: one `SiteController` per managed site, fed by
the relay hub's observations and sending through the relay's own-call mechanism."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from harmone.clock import Clock
from harmone.errors import ConfigError, FrameError
from harmone.loadmgmt.config import SiteLoadConfig, parse_config
from harmone.loadmgmt.controller import ChargerLoad, ConnectorLoad, SiteController, Timing
from harmone.loadmgmt.meters import MeterPoller
from harmone.loadmgmt.model import AllocationOptions, Measurement
from harmone.loadmgmt.traffic import (
    TxEnded,
    TxStarted,
    cpms_cap,
    cpms_clear,
    reading_from_sampled_values,
)
from harmone.ocpp.framing import MessageType, decode, parse_envelope, payload_of
from harmone.ocpp.session import Observe
from harmone.ocpp.versions import OcppVersion
from harmone.relay.hub import RelayHub
from harmone.relay.state import LiveCharger
from harmone.store.loadconfig import LoadConfigRepo

__all__ = ["LoadManager"]

log = logging.getLogger(__name__)

_ENDED_STATUSES = {"Available", "Unavailable", "Faulted"}


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return payload_of(decode(text), parse_envelope(text))
    except FrameError:
        return None


class LoadManager:
    def __init__(
        self,
        hub: RelayHub,
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
        for (uid, _), link in self.hub.links.items():
            if uid == site_uid and link.live.ocpp_version:
                ctl.connected(link.live.id, OcppVersion(link.live.ocpp_version))
                ctl.chargers[link.live.id].booted = True  # already past its boot
        ctl.start()
        return ctl

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
        try:
            changed = self._learn(ctl, live.id, state, obs)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            # A payload that passed the relay but is not what the spec says: ignore it here,
            # the frame itself was relayed unchanged.
            log.info(
                "site=%s charger=%s could not read %s for load management: %s",
                live.site_uid,
                live.id,
                obs.action,
                exc,
            )
            return
        if changed:
            ctl.poke()

    def _learn(self, ctl: SiteController, cid: str, state: ChargerLoad, obs: Observe) -> bool:
        is16 = state.version is OcppVersion.V16
        settings = ctl.config.settings_for(cid)
        action = obs.action
        if obs.type is MessageType.CALL and obs.sender == "charger":
            p = _payload(obs.text)
            if not isinstance(p, dict):
                return False
            if action != "BootNotification" and not state.booted:
                state.booted = True  # a charger that reconnects without booting again
            if action == "StatusNotification":
                conn = p.get("connectorId") if is16 else p.get("evseId")
                status = p.get("status") if is16 else p.get("connectorStatus")
                if isinstance(conn, int) and conn > 0:
                    state.connectors.add(conn)
                    if status in _ENDED_STATUSES and conn in state.txs:
                        self._end(ctl, cid, state, TxEnded(state.txs[conn].transaction_id, conn))
                return True
            if action == "StopTransaction":
                self._end(ctl, cid, state, TxEnded(str(p["transactionId"])))
                return True
            if action == "MeterValues":
                conn = p.get("connectorId") if is16 else p.get("evseId")
                tx_id = p.get("transactionId") if is16 else None
                if isinstance(conn, int) and conn > 0:
                    if tx_id is not None and conn not in state.txs:
                        self._start(ctl, state, TxStarted(conn, str(tx_id)))
                    self._readings(ctl, state, conn, p.get("meterValue"), settings)
                return True
            if action == "TransactionEvent":
                return self._transaction_event(ctl, cid, state, p, settings)
            if action == "NotifyEVChargingNeeds":
                conn = p.get("evseId")
                ac = (p.get("chargingNeeds") or {}).get("acChargingParameters") or {}
                if isinstance(conn, int) and conn in state.txs and "evMaxCurrent" in ac:
                    state.txs[conn].car_max = float(ac["evMaxCurrent"])
                    return True
            return False
        if obs.type is MessageType.CALLRESULT and obs.sender in ("cpms", "harmone"):
            p = _payload(obs.text)
            if action == "BootNotification" and isinstance(p, dict):
                state.booted = p.get("status") == "Accepted"
                state.default_sent = None
                return state.booted
            if action == "StartTransaction" and isinstance(p, dict):
                req = _payload(obs.request_text)
                accepted = (p.get("idTagInfo") or {}).get("status") == "Accepted"
                if accepted and isinstance(req, dict) and "transactionId" in p:
                    self._start(
                        ctl, state, TxStarted(int(req["connectorId"]), str(p["transactionId"]))
                    )
                    return True
            return False
        if obs.type is MessageType.CALL and obs.sender == "cpms":
            p = _payload(obs.text)
            if action == "SetChargingProfile":
                cap = cpms_cap(p, is16, settings.phases, settings.voltage)
                if cap is not None:
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
            elif action == "ClearChargingProfile":
                target = cpms_clear(p, is16)
                for k in [k for k in state.caps if not target or k == target]:
                    del state.caps[k]
                # the clear may have removed HARMON-E's own profiles too: send them again
                self._resend(state)
                return True
        return False

    def _transaction_event(
        self, ctl: SiteController, cid: str, state: ChargerLoad, p: dict[str, Any], settings: Any
    ) -> bool:
        info = p.get("transactionInfo") or {}
        tx_id = str(info.get("transactionId"))
        evse = (p.get("evse") or {}).get("id")
        if not isinstance(evse, int):
            evse = next((c for c, t in state.txs.items() if t.transaction_id == tx_id), None)
        kind = p.get("eventType")
        if kind == "Ended":
            self._end(ctl, cid, state, TxEnded(tx_id, evse))
            return True
        if not isinstance(evse, int) or evse < 1:
            return False
        state.connectors.add(evse)
        if evse not in state.txs or state.txs[evse].transaction_id != tx_id:
            self._start(ctl, state, TxStarted(evse, tx_id))
        self._readings(ctl, state, evse, p.get("meterValue"), settings)
        return True

    def _start(self, ctl: SiteController, state: ChargerLoad, ev: TxStarted) -> None:
        state.connectors.add(ev.connector_id)
        state.txs[ev.connector_id] = ConnectorLoad(ev.transaction_id, self.clock.now())

    def _end(self, ctl: SiteController, cid: str, state: ChargerLoad, ev: TxEnded) -> None:
        for conn, tx in list(state.txs.items()):
            if tx.transaction_id == ev.transaction_id or ev.connector_id == conn:
                del state.txs[conn]

    def _readings(
        self, ctl: SiteController, state: ChargerLoad, conn: int, values: Any, settings: Any
    ) -> None:
        tx = state.txs.get(conn)
        if tx is None or not isinstance(values, list):
            return
        for mv in values:
            if not isinstance(mv, dict):
                continue
            sampled = mv.get("sampledValue")
            if not isinstance(sampled, list):
                continue
            reading = reading_from_sampled_values(conn, sampled, settings.phases, settings.voltage)
            if reading is not None:
                tx.measured = reading.amps
                tx.measured_at = self.clock.now()

    @staticmethod
    def _resend(state: ChargerLoad) -> None:
        state.default_sent = None
        for tx in state.txs.values():
            tx.sent_limit = None
