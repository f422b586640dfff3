"""The calls a simulated charger makes: boot, heartbeat, status, authorize, transactions, meter
values, each in OCPP 1.6 or 2.0.1 wording."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from harmone import __version__
from harmone.errors import SimulatorError
from harmone.sim.charger_profiles import ChargerProfiles
from harmone.sim.charger_state import (
    MODEL,
    STATUS_16,
    STATUS_201,
    STOP_TRIGGER_201,
    VALID_16,
    VALID_201,
    VENDOR,
    ConnectorState,
)

__all__ = ["ChargerMessages"]


class ChargerMessages(ChargerProfiles):
    """What the charger tells the central system."""

    async def boot(self, reason: str = "PowerUp") -> Any:
        """Send BootNotification (`reason` is used by 2.0.1 only); returns the response."""
        if self.version == "1.6":
            payload: Any = call16.BootNotification(
                charge_point_vendor=VENDOR,
                charge_point_model=MODEL,
                charge_point_serial_number=self.serial_number,
                firmware_version=__version__,
            )
        else:
            station = {
                "vendorName": VENDOR,
                "model": MODEL,
                "serialNumber": self.serial_number,
                "firmwareVersion": __version__,
            }
            payload = call201.BootNotification(charging_station=station, reason=reason)
        response = await self._call(payload)
        self.boot_status = str(response.status)
        self._log.info("booted: %s", self.boot_status)
        return response

    async def heartbeat(self) -> Any:
        call = call16.Heartbeat() if self.version == "1.6" else call201.Heartbeat()
        return await self._call(call)

    async def status(self, connector_id: int, status: str) -> None:
        """Send StatusNotification; 1.6 words are mapped to 2.0.1 ones and back."""
        state = self._connector(connector_id)
        if self.version == "1.6":
            wire = STATUS_16.get(status, status)
            if wire not in VALID_16:
                raise SimulatorError(f"no OCPP 1.6 connector status {status!r}")
            error = "OtherError" if wire == "Faulted" else "NoError"
            payload: Any = call16.StatusNotification(
                connector_id=connector_id, error_code=error, status=wire, timestamp=self._ts()
            )
        else:
            wire = STATUS_201.get(status, status)
            if wire not in VALID_201:
                raise SimulatorError(f"no OCPP 2.0.1 connector status {status!r}")
            payload = call201.StatusNotification(
                timestamp=self._ts(), connector_status=wire, evse_id=connector_id, connector_id=1
            )
        await self._call(payload)
        state.status = status

    async def authorize(self, id_tag: str) -> Any:
        if self.version == "1.6":
            return await self._call(call16.Authorize(id_tag=id_tag))
        token = {"idToken": id_tag, "type": "ISO14443"}
        return await self._call(call201.Authorize(id_token=token))

    def _sampled(
        self, state: ConnectorState, amps: Sequence[float], context: str
    ) -> list[dict[str, Any]]:
        """One meterValue: the energy register and the current of each phase."""
        v16 = self.version == "1.6"

        def sample(value: float, measurand: str, unit: str, phase: str = "") -> dict[str, Any]:
            entry: dict[str, Any] = {"context": context, "measurand": measurand}
            if v16:  # 1.6 carries values as decimal strings
                entry.update(value=f"{value:.{0 if unit == 'Wh' else 1}f}", unit=unit)
            else:
                entry.update(value=round(value, 1), unitOfMeasure={"unit": unit})
            if phase:
                entry["phase"] = phase
            return entry

        values = [sample(state.energy_wh, "Energy.Active.Import.Register", "Wh")]
        values += [sample(a, "Current.Import", "A", f"L{i}") for i, a in enumerate(amps, 1)]
        return [{"timestamp": self._ts(), "sampledValue": values}]

    def _next_seq(self, state: ConnectorState) -> int:
        seq = state.seq_no
        state.seq_no += 1
        return seq

    async def start_transaction(
        self, connector_id: int = 1, id_tag: str = "SIMTAG", *, remote_start_id: int | None = None
    ) -> int | str:
        """Start a transaction; returns its id (the CPMS's int in 1.6, our uuid in 2.0.1)."""
        state = self._connector(connector_id)
        if state.transaction_id is not None or state.starting:
            raise SimulatorError(f"{self.charge_point_id}: connector {connector_id} is busy")
        state.starting = True
        try:
            if self.version == "1.6":
                response = await self._call(
                    call16.StartTransaction(
                        connector_id=connector_id,
                        id_tag=id_tag,
                        meter_start=int(state.energy_wh),
                        timestamp=self._ts(),
                    )
                )
                tid: int | str = int(response.transaction_id)
                auth = response.id_tag_info.get("status")
            else:
                tid = str(uuid.uuid4())
                state.seq_no = 0
                info: dict[str, Any] = {"transactionId": tid, "chargingState": "Charging"}
                if remote_start_id is not None:
                    info["remoteStartId"] = remote_start_id
                response = await self._call(
                    call201.TransactionEvent(
                        event_type="Started",
                        timestamp=self._ts(),
                        trigger_reason="RemoteStart"
                        if remote_start_id is not None
                        else "Authorized",
                        seq_no=self._next_seq(state),
                        transaction_info=info,
                        evse={"id": connector_id, "connectorId": 1},
                        id_token={"idToken": id_tag, "type": "ISO14443"},
                        meter_value=self._sampled(state, [0.0] * self.phases, "Transaction.Begin"),
                    )
                )
                auth = (response.id_token_info or {}).get("status", "Accepted")
        finally:
            state.starting = False
        state.transaction_id, state.id_tag = tid, id_tag
        self.transactions_started += 1
        if auth != "Accepted":
            # A real charger would stop here; the simulator carries on so that the relay's
            # bookkeeping can be tested even against a CPMS that refuses the tag.
            self._log.warning("transaction %s started although the tag is %s", tid, auth)
        self._log.info("transaction %s started on connector %d", tid, connector_id)
        return tid

    async def meter_values(
        self, connector_id: int, wh: float, amps_per_phase: float | Sequence[float]
    ) -> None:
        """Report the energy register and the current on each phase.

        With a transaction running this is 1.6 MeterValues with its transactionId, or 2.0.1
        TransactionEvent(Updated); without one, plain MeterValues.
        """
        state = self._connector(connector_id)
        amps = (
            [float(amps_per_phase)] * self.phases
            if isinstance(amps_per_phase, int | float)
            else [float(a) for a in amps_per_phase]
        )
        state.energy_wh = wh
        state.current_a = max(amps, default=0.0)
        sampled = self._sampled(state, amps, "Sample.Periodic")
        tid = state.transaction_id
        if self.version == "1.6":
            await self._call(
                call16.MeterValues(
                    connector_id=connector_id,
                    meter_value=sampled,
                    transaction_id=tid if isinstance(tid, int) else None,
                )
            )
        elif tid is None:
            await self._call(call201.MeterValues(evse_id=connector_id, meter_value=sampled))
        else:
            charging = "Charging" if any(a > 0 for a in amps) else "SuspendedEVSE"
            await self._call(
                call201.TransactionEvent(
                    event_type="Updated",
                    timestamp=self._ts(),
                    trigger_reason="MeterValuePeriodic",
                    seq_no=self._next_seq(state),
                    transaction_info={"transactionId": tid, "chargingState": charging},
                    meter_value=sampled,
                )
            )

    async def stop_transaction(
        self, connector_id: int = 1, *, wh: float | None = None, reason: str = "Local"
    ) -> None:
        """Stop the connector's transaction (1.6 StopTransaction / 2.0.1 Ended)."""
        state = self._connector(connector_id)
        tid = state.transaction_id
        if tid is None:
            raise SimulatorError(f"{self.charge_point_id}: no transaction on {connector_id}")
        if wh is not None:
            state.energy_wh = wh
        if self.version == "1.6":
            await self._call(
                call16.StopTransaction(
                    meter_stop=int(state.energy_wh),
                    timestamp=self._ts(),
                    transaction_id=tid,
                    reason=reason,
                    id_tag=state.id_tag,
                )
            )
        else:
            info = {"transactionId": tid, "chargingState": "Idle", "stoppedReason": reason}
            await self._call(
                call201.TransactionEvent(
                    event_type="Ended",
                    timestamp=self._ts(),
                    trigger_reason=STOP_TRIGGER_201.get(reason, "StopAuthorized"),
                    seq_no=self._next_seq(state),
                    transaction_info=info,
                    meter_value=self._sampled(state, [0.0] * self.phases, "Transaction.End"),
                )
            )
        state.transaction_id, state.id_tag, state.current_a = None, None, 0.0
        # A TxProfile lives exactly as long as its transaction (both versions say so).
        self.profiles = [
            p
            for p in self.profiles
            if not (p.connector_id == connector_id and p.purpose == "TxProfile")
        ]
        self._profiles_changed()
        self._log.info("transaction %s stopped on connector %d (%s)", tid, connector_id, reason)

    async def charging_needs(
        self,
        connector_id: int,
        *,
        departure: str,
        energy_wh: float,
        max_current: float = 32.0,
        min_current: float = 6.0,
    ) -> Any:
        """2.0.1 NotifyEVChargingNeeds for an AC car (ISO 15118): when it leaves (`departure`,
        ISO 8601) and the energy it asks for."""
        if self.version == "1.6":
            raise SimulatorError(f"{self.charge_point_id}: NotifyEVChargingNeeds is 2.x only")
        transfer = "AC_three_phase" if self.phases == 3 else "AC_single_phase"
        ac = {
            "energyAmount": int(energy_wh),
            "evMinCurrent": int(min_current),
            "evMaxCurrent": int(max_current),
            "evMaxVoltage": 400,
        }
        needs = {
            "requestedEnergyTransfer": transfer,
            "departureTime": departure,
            "acChargingParameters": ac,
        }
        return await self._call(
            call201.NotifyEVChargingNeeds(charging_needs=needs, evse_id=connector_id)
        )
