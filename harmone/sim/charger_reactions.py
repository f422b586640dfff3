"""How a simulated charger acts on what the central system asks: remote start and stop,
triggered messages, availability, and its 1.6 configuration keys / 2.0.1 variables."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from harmone.sim.charger_messages import ChargerMessages
from harmone.sim.charger_state import Factory

__all__ = ["ChargerReactions"]


class ChargerReactions(ChargerMessages):
    """The charger's side of the calls its station handlers receive."""

    def _free_connector(self, wanted: int | None) -> int | None:
        candidates = [wanted] if wanted else list(self.connectors)
        for cid in candidates:
            state = self.connectors.get(cid)
            if state and state.operative and state.transaction_id is None and not state.starting:
                return cid
        return None

    def _connector_of(self, transaction_id: Any) -> int | None:
        for cid, state in self.connectors.items():
            if state.transaction_id is not None and state.transaction_id == transaction_id:
                return cid
        return None

    async def _remote_start(
        self, cid: int, id_tag: str, remote_id: int | None, profile: dict[str, Any] | None
    ) -> None:
        await self.status(cid, "Preparing")
        await self.start_transaction(cid, id_tag, remote_start_id=remote_id)
        if profile is not None:
            self._install_profile(cid, profile)
        await self.status(cid, "Charging")

    async def _remote_stop(self, cid: int) -> None:
        await self.stop_transaction(cid, reason="Remote")
        await self.status(cid, "Finishing")
        await self.status(cid, "Available")

    def _triggered(self, message: str, connector_id: int | None) -> Factory | None:
        cids = [connector_id] if connector_id in self.connectors else list(self.connectors)

        async def statuses() -> None:
            for cid in cids:
                await self.status(cid, self.connectors[cid].status)

        async def meters() -> None:
            for cid in cids:
                state = self.connectors[cid]
                await self.meter_values(cid, state.energy_wh, self.simulated_current(cid))

        factories: dict[str, Factory] = {
            "BootNotification": self.boot,
            "Heartbeat": self.heartbeat,
            "StatusNotification": statuses,
            "MeterValues": meters,
        }
        if self.version == "2.0.1":
            factories["TransactionEvent"] = meters
        return factories.get(message)

    def _change_availability(
        self, connector_id: int, operative: bool, after: Callable[[Factory], None]
    ) -> str:
        cids = list(self.connectors) if connector_id == 0 else [connector_id]
        if any(c not in self.connectors for c in cids):
            return "Rejected"
        busy = False
        for cid in cids:
            state = self.connectors[cid]
            state.operative = operative
            if state.transaction_id is not None:
                busy = True  # takes effect when the transaction ends
                continue
            word = "Available" if operative else "Unavailable"
            after(functools.partial(self.status, cid, word))
        return "Scheduled" if busy else "Accepted"

    def _apply_interval(self, name: str, value: str) -> bool:
        """Intervals change the simulator's own timing; False when `value` is not usable."""
        try:
            seconds = float(value)
        except ValueError:
            return False
        if seconds <= 0:
            return False
        if name == "HeartbeatInterval":
            self.heartbeat_interval = seconds
        else:
            self.meter_interval = seconds
        return True

    def _set_setting(self, key: str, value: str) -> str:
        if key not in self.configuration:
            return "NotSupported"
        if self.configuration[key][1]:
            return "Rejected"
        interval = key in ("HeartbeatInterval", "MeterValueSampleInterval")
        if interval and not self._apply_interval(key, value):
            return "Rejected"
        self.configuration[key] = (value, False)
        return "Accepted"

    def _set_variable(self, component: str, variable: str, value: str) -> str:
        key = (component, variable)
        if key not in self.variables:
            known = any(c == component for c, _ in self.variables)
            return "UnknownVariable" if known else "UnknownComponent"
        if self.variables[key][1]:
            return "Rejected"
        if variable in ("HeartbeatInterval", "TxUpdatedInterval"):
            name = "HeartbeatInterval" if variable == "HeartbeatInterval" else "Meter"
            if not self._apply_interval(name, value):
                return "Rejected"
        self.variables[key] = (value, False)
        return "Accepted"
