"""A simulated charging station speaking OCPP 1.6J or 2.0.1 over a real WebSocket.

It is built on the `ocpp` package's ChargePoint so that every frame it sends and every answer
it gives is checked against the official JSON schemas: whatever the relay does to a frame, a
schema-correct charger is on the other end. Tests drive it call by call (`boot()`,
`start_transaction()`, ...) or let `run_scenario()` play a bounded charging session; everything
the central system asks of it is answered, recorded in `received_calls`, and charging profiles
change the current it reports when `obey_profiles` is set.

`SimulatedCharger` is assembled from one module per concern, each a layer of the class:
`charger_state` (connectors, profiles, settings: values), `charger_connection` (state, the
WebSocket, one call at a time), `charger_stations` (the 1.6 and 2.0.1 handlers of calls from
the central system), `charger_profiles` (profiles applied, current drawn), `charger_messages`
(the calls it makes) and `charger_reactions` (what it does when asked); this module adds the
scripted session. Import it from here (or `harmone.sim`).
"""

from __future__ import annotations

import asyncio
import contextlib

from harmone.errors import SimulatorError
from harmone.sim.charger_reactions import ChargerReactions
from harmone.sim.charger_state import (
    MODEL,
    VENDOR,
    VOLTAGE,
    ConnectorState,
    InstalledProfile,
    OcppVersion,
)

__all__ = [
    "MODEL",
    "VENDOR",
    "ConnectorState",
    "InstalledProfile",
    "OcppVersion",
    "SimulatedCharger",
]


class SimulatedCharger(ChargerReactions):
    """One simulated charging station with `connectors` connectors (1.6) or EVSEs (2.0.1).

    `version` is what the charger speaks unless the handshake negotiates the other one of
    the two it knows (offer both in `subprotocols` to test negotiation). Energy and current
    are simulated per connector: a charging connector draws `max_current` per phase, lowered
    by the charging profiles in force when `obey_profiles` is set, and drops to 0 below
    `min_current` as an EV would. With `profile_delay` the EV follows a new limit only that many
    seconds after the charger accepted it, as real chargers and cars take time to ramp. With
    `answer_profiles` False it never answers SetChargingProfile (a charger whose firmware hangs
    on smart charging): the call is recorded and nothing changes.
    """

    async def run_scenario(
        self,
        duration: float,
        *,
        connector_id: int = 1,
        id_tag: str = "SIMTAG",
        start_after: float | None = None,
        stop_before: float | None = None,
    ) -> None:
        """Play a charging session for `duration` seconds, then return (connection stays open).

        Boot, every connector Available, heartbeats every `heartbeat_interval`; after
        `start_after` (default: a fifth of the run, at most 5 s) a transaction on
        `connector_id` reports meter values every `meter_interval`, and every running
        transaction is stopped `stop_before` the end. Transactions started remotely are
        metered the same way. Raises SimulatorError if the connection is lost.
        """
        loop = asyncio.get_running_loop()
        begin = loop.time()
        deadline = begin + duration
        if not self.connected:
            await self.connect()
        start_at = begin + (min(5.0, duration / 5) if start_after is None else start_after)
        stop_at = deadline - (min(5.0, duration / 5) if stop_before is None else stop_before)
        await self.boot()
        for cid in self.connectors:
            await self.status(cid, "Available" if self.connectors[cid].operative else "Unavailable")
        next_beat = loop.time() + self.heartbeat_interval
        next_meter = loop.time() + self.meter_interval
        last_meter = loop.time()
        started = False
        while (now := loop.time()) < deadline:
            if self.closed.is_set():
                raise SimulatorError(f"{self.charge_point_id}: connection lost during scenario")
            if now >= next_beat:
                await self.heartbeat()
                next_beat = now + self.heartbeat_interval
            if not started and now >= start_at:
                started = True
                if now < stop_at and self._free_connector(connector_id) == connector_id:
                    await self.status(connector_id, "Preparing")
                    await self.start_transaction(connector_id, id_tag)
                    await self.status(connector_id, "Charging")
                    last_meter, next_meter = loop.time(), loop.time() + self.meter_interval
            if now >= next_meter:
                await self._meter_tick(now - last_meter)
                last_meter, next_meter = now, now + self.meter_interval
            if now >= stop_at:
                await self._stop_all()
            wake = min(next_beat, next_meter, deadline)
            if not started:
                wake = min(wake, start_at)
            if now < stop_at:
                wake = min(wake, stop_at)
            await self._sleep_or_closed(max(0.0, wake - loop.time()))
        self._log.info("scenario finished after %.1f s", loop.time() - begin)

    async def _meter_tick(self, elapsed: float) -> None:
        for cid, state in self.connectors.items():
            if state.transaction_id is None:
                continue
            amps = self.simulated_current(cid)
            wh = state.energy_wh + amps * self.phases * VOLTAGE * elapsed / 3600.0
            # Tell the central system when the EVSE (not the EV) stops the charge, as
            # load management relies on it.
            if amps == 0 and state.status == "Charging":
                await self.status(cid, "SuspendedEVSE")
            elif amps > 0 and state.status == "SuspendedEVSE":
                await self.status(cid, "Charging")
            await self.meter_values(cid, wh, amps)

    async def _stop_all(self) -> None:
        for cid, state in self.connectors.items():
            if state.transaction_id is not None:
                await self.stop_transaction(cid)
                await self.status(cid, "Finishing")
                await self.status(cid, "Available")

    async def _sleep_or_closed(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.closed.wait()
