"""The `ocpp` ChargePoints under a simulated charger: what it answers the central system.

One class per OCPP version (`Station16`, `Station201`) with a handler per call the simulator
knows; each handler reads the payload as received and asks the `SimulatedCharger` to act.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ocpp.charge_point import ChargePoint as _OcppChargePoint
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import ClientConnection

from harmone.sim.charger_state import VENDOR, Factory
from harmone.sim.peer import answer_unhandled, frame_text, is_call_of, is_stray_answer, on

if TYPE_CHECKING:
    from harmone.sim.charger import SimulatedCharger

__all__ = ["Station", "Station16", "Station201"]


class Station(_OcppChargePoint):  # type: ignore[misc]  # the ocpp package is untyped
    """The ocpp ChargePoint under a SimulatedCharger: routes calls, records them.

    Handlers read the payload as received (`self.raw`, camelCase) rather than the ocpp
    package's snake_case keyword arguments, so that what tests see is what was on the wire.
    Calls a handler wants to make in reaction (a StartTransaction after a RemoteStart) are
    queued with `after()` and only started once the answer has been sent.
    """

    def __init__(self, sim: SimulatedCharger, connection: ClientConnection, logger: Any) -> None:
        super().__init__(
            sim.charge_point_id, connection, response_timeout=sim.call_timeout, logger=logger
        )
        self.sim = sim
        self.raw: dict[str, Any] = {}
        self._followups: list[Factory] = []
        #: Ids of our calls still waiting for an answer.
        self.awaiting: set[str] = set()

    def after(self, factory: Factory) -> None:
        self._followups.append(factory)

    async def route_message(self, raw_msg: Any) -> None:
        text = frame_text(raw_msg)
        self.sim.raw_frames.append(text)
        if is_stray_answer(text, self.awaiting):
            self.sim._log.info("dropped an answer to no pending call: %.200s", text)
            return
        if not self.sim.answer_profiles and is_call_of(text, "SetChargingProfile"):
            frame = json.loads(text)
            self.sim.received_calls.append(("SetChargingProfile", frame[3]))
            self.sim._log.info("left SetChargingProfile %s unanswered", frame[1])
            return
        await super().route_message(raw_msg)

    async def _handle_call(self, msg: Any) -> Any:
        self.raw = msg.payload if isinstance(msg.payload, dict) else {}
        self.sim.received_calls.append((str(msg.action), self.raw))
        if await answer_unhandled(self, msg):
            return None
        self._followups = []
        result = await super()._handle_call(msg)
        followups, self._followups = self._followups, []
        for factory in followups:
            self.sim._spawn(factory())
        return result


class Station16(Station):
    _call = call16
    _call_result = result16
    _ocpp_version = "1.6"

    @on("SetChargingProfile")
    def on_set_charging_profile(self, **_: Any) -> Any:
        raw = self.raw
        status = self.sim._install_profile(raw["connectorId"], raw["csChargingProfiles"])
        return result16.SetChargingProfile(status=status)

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, **_: Any) -> Any:
        raw = self.raw
        removed = self.sim._clear_profiles(
            raw.get("id"), raw.get("connectorId"), raw.get("chargingProfilePurpose"),
            raw.get("stackLevel"),
        )  # fmt: skip
        return result16.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @on("RemoteStartTransaction")
    def on_remote_start_transaction(self, **_: Any) -> Any:
        raw = self.raw
        cid = self.sim._free_connector(raw.get("connectorId"))
        if cid is None:
            return result16.RemoteStartTransaction(status="Rejected")
        id_tag, profile = str(raw["idTag"]), raw.get("chargingProfile")
        self.after(lambda: self.sim._remote_start(cid, id_tag, None, profile))
        return result16.RemoteStartTransaction(status="Accepted")

    @on("RemoteStopTransaction")
    def on_remote_stop_transaction(self, **_: Any) -> Any:
        cid = self.sim._connector_of(self.raw["transactionId"])
        if cid is None:
            return result16.RemoteStopTransaction(status="Rejected")
        self.after(lambda: self.sim._remote_stop(cid))
        return result16.RemoteStopTransaction(status="Accepted")

    @on("Reset")
    def on_reset(self, **_: Any) -> Any:
        return result16.Reset(status="Accepted")

    @on("ChangeConfiguration")
    def on_change_configuration(self, **_: Any) -> Any:
        key, value = str(self.raw["key"]), str(self.raw["value"])
        return result16.ChangeConfiguration(status=self.sim._set_setting(key, value))

    @on("GetConfiguration")
    def on_get_configuration(self, **_: Any) -> Any:
        settings = self.sim.configuration
        wanted = self.raw.get("key") or list(settings)
        known = [
            {"key": k, "readonly": settings[k][1], "value": settings[k][0]}
            for k in wanted
            if k in settings
        ]
        unknown = [k for k in wanted if k not in settings]
        return result16.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on("TriggerMessage")
    def on_trigger_message(self, **_: Any) -> Any:
        factory = self.sim._triggered(self.raw["requestedMessage"], self.raw.get("connectorId"))
        if factory is None:
            return result16.TriggerMessage(status="NotImplemented")
        self.after(factory)
        return result16.TriggerMessage(status="Accepted")

    @on("ChangeAvailability")
    def on_change_availability(self, **_: Any) -> Any:
        status = self.sim._change_availability(
            self.raw["connectorId"], self.raw["type"] == "Operative", self.after
        )
        return result16.ChangeAvailability(status=status)

    @on("DataTransfer")
    def on_data_transfer(self, **_: Any) -> Any:
        if self.raw.get("vendorId") != VENDOR:
            return result16.DataTransfer(status="UnknownVendorId")
        return result16.DataTransfer(status="Accepted", data=self.raw.get("data"))

    @on("UnlockConnector")
    def on_unlock_connector(self, **_: Any) -> Any:
        known = self.raw["connectorId"] in self.sim.connectors
        return result16.UnlockConnector(status="Unlocked" if known else "NotSupported")


class Station201(Station):
    _call = call201
    _call_result = result201
    _ocpp_version = "2.0.1"

    @on("SetChargingProfile")
    def on_set_charging_profile(self, **_: Any) -> Any:
        status = self.sim._install_profile(self.raw["evseId"], self.raw["chargingProfile"])
        return result201.SetChargingProfile(status=status)

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, **_: Any) -> Any:
        criteria = self.raw.get("chargingProfileCriteria") or {}
        removed = self.sim._clear_profiles(
            self.raw.get("chargingProfileId"), criteria.get("evseId"),
            criteria.get("chargingProfilePurpose"), criteria.get("stackLevel"),
        )  # fmt: skip
        return result201.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @on("RequestStartTransaction")
    def on_request_start_transaction(self, **_: Any) -> Any:
        raw = self.raw
        cid = self.sim._free_connector(raw.get("evseId"))
        if cid is None:
            return result201.RequestStartTransaction(status="Rejected")
        id_tag, profile = str(raw["idToken"]["idToken"]), raw.get("chargingProfile")
        remote_id = int(raw["remoteStartId"])
        self.after(lambda: self.sim._remote_start(cid, id_tag, remote_id, profile))
        return result201.RequestStartTransaction(status="Accepted")

    @on("RequestStopTransaction")
    def on_request_stop_transaction(self, **_: Any) -> Any:
        cid = self.sim._connector_of(self.raw["transactionId"])
        if cid is None:
            return result201.RequestStopTransaction(status="Rejected")
        self.after(lambda: self.sim._remote_stop(cid))
        return result201.RequestStopTransaction(status="Accepted")

    @on("Reset")
    def on_reset(self, **_: Any) -> Any:
        return result201.Reset(status="Accepted")

    @on("SetVariables")
    def on_set_variables(self, **_: Any) -> Any:
        results = []
        for item in self.raw["setVariableData"]:
            component, variable = item["component"], item["variable"]
            status = self.sim._set_variable(
                component["name"], variable["name"], str(item["attributeValue"])
            )
            results.append(
                {"attributeStatus": status, "component": component, "variable": variable}
            )
        return result201.SetVariables(set_variable_result=results)

    @on("GetVariables")
    def on_get_variables(self, **_: Any) -> Any:
        results = []
        for item in self.raw["getVariableData"]:
            component, variable = item["component"], item["variable"]
            entry: dict[str, Any] = {"component": component, "variable": variable}
            comp, var = component["name"], variable["name"]
            if (comp, var) in self.sim.variables:
                entry["attributeStatus"] = "Accepted"
                entry["attributeValue"] = self.sim.variables[(comp, var)][0]
            elif any(c == comp for c, _ in self.sim.variables):
                entry["attributeStatus"] = "UnknownVariable"
            else:
                entry["attributeStatus"] = "UnknownComponent"
            results.append(entry)
        return result201.GetVariables(get_variable_result=results)

    @on("TriggerMessage")
    def on_trigger_message(self, **_: Any) -> Any:
        evse = self.raw.get("evse") or {}
        factory = self.sim._triggered(self.raw["requestedMessage"], evse.get("id"))
        if factory is None:
            return result201.TriggerMessage(status="NotImplemented")
        self.after(factory)
        return result201.TriggerMessage(status="Accepted")

    @on("ChangeAvailability")
    def on_change_availability(self, **_: Any) -> Any:
        evse = self.raw.get("evse") or {}
        operative = self.raw["operationalStatus"] == "Operative"
        status = self.sim._change_availability(evse.get("id", 0), operative, self.after)
        return result201.ChangeAvailability(status=status)

    @on("DataTransfer")
    def on_data_transfer(self, **_: Any) -> Any:
        if self.raw.get("vendorId") != VENDOR:
            return result201.DataTransfer(status="UnknownVendorId")
        return result201.DataTransfer(status="Accepted", data=self.raw.get("data"))

    @on("UnlockConnector")
    def on_unlock_connector(self, **_: Any) -> Any:
        known = self.raw["evseId"] in self.sim.connectors
        return result201.UnlockConnector(status="Unlocked" if known else "UnknownConnector")
