"""A simulated charging station speaking OCPP 1.6J or 2.0.1 over a real WebSocket.

It is built on the `ocpp` package's ChargePoint so that every frame it sends and every answer
it gives is checked against the official JSON schemas: whatever the relay does to a frame, a
schema-correct charger is on the other end. Tests drive it call by call (`boot()`,
`start_transaction()`, ...) or let `run_scenario()` play a bounded charging session; everything
the central system asks of it is answered, recorded in `received_calls`, and charging profiles
change the current it reports when `obey_profiles` is set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import ssl
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast
from urllib.parse import quote

from ocpp.charge_point import ChargePoint as _OcppChargePoint
from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.exceptions import NotSupportedError as OcppNotSupported
from ocpp.exceptions import OCPPError
from ocpp.routing import on as _ocpp_on
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v21.enums import Action as Action21
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.typing import Subprotocol

from harmone import __version__
from harmone.clock import Clock, SystemClock
from harmone.errors import SimulatorError

__all__ = [
    "MODEL",
    "VENDOR",
    "ConnectorState",
    "InstalledProfile",
    "OcppVersion",
    "SimulatedCharger",
]

log = logging.getLogger(__name__)

OcppVersion = Literal["1.6", "2.0.1"]
VENDOR = "HARMON-E"
MODEL = "SimCharger"
VOLTAGE = 230.0

_VERSION_OF_SUBPROTOCOL: dict[str | None, OcppVersion] = {
    "ocpp1.6": "1.6",
    "ocpp2.0.1": "2.0.1",
    # 2.1 is a superset of 2.0.1 for every message the simulator sends or answers.
    "ocpp2.1": "2.0.1",
}
# One vocabulary for callers; each version gets its own word for the same connector state.
_STATUS_16 = {"Occupied": "Preparing"}
_STATUS_201 = dict.fromkeys(
    ("Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing"), "Occupied"
)
_VALID_16 = {
    "Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV", "Finishing",
    "Reserved", "Unavailable", "Faulted",
}  # fmt: skip
_VALID_201 = {"Available", "Occupied", "Reserved", "Unavailable", "Faulted"}
_STATION_MAX = ("ChargePointMaxProfile", "ChargingStationMaxProfile")
_STOP_TRIGGER_201 = {"Remote": "RemoteStop", "EVDisconnected": "EVCommunicationLost"}

_ACTIONS: dict[str, frozenset[str]] = {
    version: frozenset(str(a) for a in actions)
    for version, actions in (("1.6", Action16), ("2.0.1", Action201), ("2.1", Action21))
}

_F = TypeVar("_F", bound=Callable[..., Any])
_Factory = Callable[[], Coroutine[Any, Any, Any]]


def _on(action: str) -> Callable[[_F], _F]:
    """`ocpp.routing.on` with a type, since the ocpp package ships none."""
    return cast(Callable[[_F], _F], _ocpp_on(action))


def _timestamp(clock: Clock) -> str:
    # OCPP wants RFC 3339 in UTC; the Z form is what most chargers send.
    return clock.now().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _ContextLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the charger's identity (and site, when known)."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{self.extra['prefix'] if self.extra else ''}: {msg}", kwargs


class _FrameLog(_ContextLog):
    """Logger handed to the ocpp package, whose every frame would otherwise be an INFO line."""

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


def _context_prefix(charge_point_id: str, context: Mapping[str, object] | None) -> str:
    parts = [f"{k}={v}" for k, v in (context or {}).items()]
    return " ".join([*parts, f"cp={charge_point_id}"])


def _frame_text(raw: Any) -> str:
    return raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace")


def _is_stray_answer(text: str, awaiting: set[str]) -> bool:
    """True for a CALLRESULT/CALLERROR whose id is not one of ours.

    The ocpp package would queue it and hand it to the next call() that waits, which then
    logs an error and waits on; dropping it keeps the one-call-at-a-time queue clean.
    """
    try:
        frame = json.loads(text)
    except ValueError:
        return False
    return (
        isinstance(frame, list)
        and len(frame) >= 2
        and frame[0] in (3, 4)
        and frame[1] not in awaiting
    )


def _is_call_of(text: str, action: str) -> bool:
    try:
        frame = json.loads(text)
    except ValueError:
        return False
    return isinstance(frame, list) and len(frame) == 4 and frame[0] == 2 and frame[2] == action


async def _answer_unhandled(station: Any, msg: Any) -> bool:
    """Answer a call no handler exists for with the right CallError; False if one exists.

    The ocpp package would log each of these as an ERROR with a traceback (and sends no
    answer at all for 2.1); for a simulator they are an expected, ordinary answer.
    """
    if msg.action in station.route_map:
        return False
    known = msg.action in _ACTIONS.get(station._ocpp_version, frozenset())
    error_cls = OcppNotImplemented if known else OcppNotSupported
    error = error_cls(details={"cause": f"{msg.action} is not simulated"})
    station.logger.debug("answering %s with %s", msg.action, error.code)
    await station._send(msg.create_call_error(error).to_json())
    return True


async def _call_or_closed(station: Any, payload: Any, closed: asyncio.Event, **kwargs: Any) -> Any:
    """Run an ocpp `call()` but give up as soon as the connection closes.

    The ocpp package would otherwise wait its full response timeout for an answer that can no
    longer come. Raises SimulatorError for every failure, keeping the cause.
    """
    action = type(payload).__name__
    call_task = asyncio.ensure_future(station.call(payload, suppress=False, **kwargs))
    closed_task = asyncio.ensure_future(closed.wait())
    try:
        await asyncio.wait({call_task, closed_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (call_task, closed_task):
            task.cancel()
        await asyncio.gather(call_task, closed_task, return_exceptions=True)
    if call_task.cancelled():
        raise SimulatorError(f"{station.id}: connection closed before {action} was answered")
    exc = call_task.exception()
    if exc is None:
        return call_task.result()
    if isinstance(exc, OCPPError):
        raise SimulatorError(f"{station.id}: {action} failed with {exc}") from exc
    if isinstance(exc, TimeoutError):
        raise SimulatorError(f"{station.id}: {action} was not answered in time") from exc
    if isinstance(exc, ConnectionClosed):
        raise SimulatorError(f"{station.id}: connection closed while sending {action}") from exc
    raise SimulatorError(f"{station.id}: {action} failed: {exc!r}") from exc


@dataclass
class ConnectorState:
    """What the simulator knows about one connector (1.6) or EVSE (2.0.1)."""

    connector_id: int
    status: str = "Available"
    transaction_id: int | str | None = None
    id_tag: str | None = None
    #: A StartTransaction / TransactionEvent(Started) is on the wire: profiles for it are welcome.
    starting: bool = False
    #: The energy register of the connector's meter; it only grows.
    energy_wh: float = 0.0
    current_a: float = 0.0
    seq_no: int = 0
    operative: bool = True


@dataclass
class InstalledProfile:
    """A charging profile the central system set, as received (camelCase, on the wire)."""

    connector_id: int
    profile: dict[str, Any]
    received_at: float

    @property
    def profile_id(self) -> int:
        return int(self.profile.get("chargingProfileId", self.profile.get("id", -1)))

    @property
    def purpose(self) -> str:
        return str(self.profile.get("chargingProfilePurpose", ""))

    @property
    def stack_level(self) -> int:
        return int(self.profile.get("stackLevel", 0))

    def schedule(self) -> dict[str, Any]:
        sched = self.profile.get("chargingSchedule", {})
        # 2.0.1 allows several schedules (one per rate unit or ISO 15118 tariff); the first
        # one is what a charger without ISO 15118 applies.
        if isinstance(sched, list):
            return cast(dict[str, Any], sched[0]) if sched else {}
        return cast(dict[str, Any], sched)

    def limit_amps(self, now: float, default_phases: int) -> float | None:
        """The per-phase current limit in force `now` seconds (loop time)."""
        sched = self.schedule()
        periods = sorted(sched.get("chargingSchedulePeriod", []), key=lambda p: p["startPeriod"])
        if not periods:
            return None
        # Elapsed time is counted from reception: exact for the Relative, single-period
        # profiles HARMON-E sends, an approximation for Absolute or Recurring ones.
        elapsed = now - self.received_at
        current = periods[0]
        for period in periods:
            if period["startPeriod"] <= elapsed:
                current = period
        limit = float(current["limit"])
        if sched.get("chargingRateUnit") == "W":
            phases = int(current.get("numberPhases") or default_phases)
            limit /= VOLTAGE * phases
        return limit


class _Station(_OcppChargePoint):  # type: ignore[misc]  # the ocpp package is untyped
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
        self._followups: list[_Factory] = []
        #: Ids of our calls still waiting for an answer.
        self.awaiting: set[str] = set()

    def after(self, factory: _Factory) -> None:
        self._followups.append(factory)

    async def route_message(self, raw_msg: Any) -> None:
        text = _frame_text(raw_msg)
        self.sim.raw_frames.append(text)
        if _is_stray_answer(text, self.awaiting):
            self.sim._log.info("dropped an answer to no pending call: %.200s", text)
            return
        if not self.sim.answer_profiles and _is_call_of(text, "SetChargingProfile"):
            frame = json.loads(text)
            self.sim.received_calls.append(("SetChargingProfile", frame[3]))
            self.sim._log.info("left SetChargingProfile %s unanswered", frame[1])
            return
        await super().route_message(raw_msg)

    async def _handle_call(self, msg: Any) -> Any:
        self.raw = msg.payload if isinstance(msg.payload, dict) else {}
        self.sim.received_calls.append((str(msg.action), self.raw))
        if await _answer_unhandled(self, msg):
            return None
        self._followups = []
        result = await super()._handle_call(msg)
        followups, self._followups = self._followups, []
        for factory in followups:
            self.sim._spawn(factory())
        return result


class _Station16(_Station):
    _call = call16
    _call_result = result16
    _ocpp_version = "1.6"

    @_on("SetChargingProfile")
    def on_set_charging_profile(self, **_: Any) -> Any:
        raw = self.raw
        status = self.sim._install_profile(raw["connectorId"], raw["csChargingProfiles"])
        return result16.SetChargingProfile(status=status)

    @_on("ClearChargingProfile")
    def on_clear_charging_profile(self, **_: Any) -> Any:
        raw = self.raw
        removed = self.sim._clear_profiles(
            raw.get("id"), raw.get("connectorId"), raw.get("chargingProfilePurpose"),
            raw.get("stackLevel"),
        )  # fmt: skip
        return result16.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @_on("RemoteStartTransaction")
    def on_remote_start_transaction(self, **_: Any) -> Any:
        raw = self.raw
        cid = self.sim._free_connector(raw.get("connectorId"))
        if cid is None:
            return result16.RemoteStartTransaction(status="Rejected")
        id_tag, profile = str(raw["idTag"]), raw.get("chargingProfile")
        self.after(lambda: self.sim._remote_start(cid, id_tag, None, profile))
        return result16.RemoteStartTransaction(status="Accepted")

    @_on("RemoteStopTransaction")
    def on_remote_stop_transaction(self, **_: Any) -> Any:
        cid = self.sim._connector_of(self.raw["transactionId"])
        if cid is None:
            return result16.RemoteStopTransaction(status="Rejected")
        self.after(lambda: self.sim._remote_stop(cid))
        return result16.RemoteStopTransaction(status="Accepted")

    @_on("Reset")
    def on_reset(self, **_: Any) -> Any:
        return result16.Reset(status="Accepted")

    @_on("ChangeConfiguration")
    def on_change_configuration(self, **_: Any) -> Any:
        key, value = str(self.raw["key"]), str(self.raw["value"])
        return result16.ChangeConfiguration(status=self.sim._set_setting(key, value))

    @_on("GetConfiguration")
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

    @_on("TriggerMessage")
    def on_trigger_message(self, **_: Any) -> Any:
        factory = self.sim._triggered(self.raw["requestedMessage"], self.raw.get("connectorId"))
        if factory is None:
            return result16.TriggerMessage(status="NotImplemented")
        self.after(factory)
        return result16.TriggerMessage(status="Accepted")

    @_on("ChangeAvailability")
    def on_change_availability(self, **_: Any) -> Any:
        status = self.sim._change_availability(
            self.raw["connectorId"], self.raw["type"] == "Operative", self.after
        )
        return result16.ChangeAvailability(status=status)

    @_on("DataTransfer")
    def on_data_transfer(self, **_: Any) -> Any:
        if self.raw.get("vendorId") != VENDOR:
            return result16.DataTransfer(status="UnknownVendorId")
        return result16.DataTransfer(status="Accepted", data=self.raw.get("data"))

    @_on("UnlockConnector")
    def on_unlock_connector(self, **_: Any) -> Any:
        known = self.raw["connectorId"] in self.sim.connectors
        return result16.UnlockConnector(status="Unlocked" if known else "NotSupported")


class _Station201(_Station):
    _call = call201
    _call_result = result201
    _ocpp_version = "2.0.1"

    @_on("SetChargingProfile")
    def on_set_charging_profile(self, **_: Any) -> Any:
        status = self.sim._install_profile(self.raw["evseId"], self.raw["chargingProfile"])
        return result201.SetChargingProfile(status=status)

    @_on("ClearChargingProfile")
    def on_clear_charging_profile(self, **_: Any) -> Any:
        criteria = self.raw.get("chargingProfileCriteria") or {}
        removed = self.sim._clear_profiles(
            self.raw.get("chargingProfileId"), criteria.get("evseId"),
            criteria.get("chargingProfilePurpose"), criteria.get("stackLevel"),
        )  # fmt: skip
        return result201.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @_on("RequestStartTransaction")
    def on_request_start_transaction(self, **_: Any) -> Any:
        raw = self.raw
        cid = self.sim._free_connector(raw.get("evseId"))
        if cid is None:
            return result201.RequestStartTransaction(status="Rejected")
        id_tag, profile = str(raw["idToken"]["idToken"]), raw.get("chargingProfile")
        remote_id = int(raw["remoteStartId"])
        self.after(lambda: self.sim._remote_start(cid, id_tag, remote_id, profile))
        return result201.RequestStartTransaction(status="Accepted")

    @_on("RequestStopTransaction")
    def on_request_stop_transaction(self, **_: Any) -> Any:
        cid = self.sim._connector_of(self.raw["transactionId"])
        if cid is None:
            return result201.RequestStopTransaction(status="Rejected")
        self.after(lambda: self.sim._remote_stop(cid))
        return result201.RequestStopTransaction(status="Accepted")

    @_on("Reset")
    def on_reset(self, **_: Any) -> Any:
        return result201.Reset(status="Accepted")

    @_on("SetVariables")
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

    @_on("GetVariables")
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

    @_on("TriggerMessage")
    def on_trigger_message(self, **_: Any) -> Any:
        evse = self.raw.get("evse") or {}
        factory = self.sim._triggered(self.raw["requestedMessage"], evse.get("id"))
        if factory is None:
            return result201.TriggerMessage(status="NotImplemented")
        self.after(factory)
        return result201.TriggerMessage(status="Accepted")

    @_on("ChangeAvailability")
    def on_change_availability(self, **_: Any) -> Any:
        evse = self.raw.get("evse") or {}
        operative = self.raw["operationalStatus"] == "Operative"
        status = self.sim._change_availability(evse.get("id", 0), operative, self.after)
        return result201.ChangeAvailability(status=status)

    @_on("DataTransfer")
    def on_data_transfer(self, **_: Any) -> Any:
        if self.raw.get("vendorId") != VENDOR:
            return result201.DataTransfer(status="UnknownVendorId")
        return result201.DataTransfer(status="Accepted", data=self.raw.get("data"))

    @_on("UnlockConnector")
    def on_unlock_connector(self, **_: Any) -> Any:
        known = self.raw["evseId"] in self.sim.connectors
        return result201.UnlockConnector(status="Unlocked" if known else "UnknownConnector")


class SimulatedCharger:
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

    def __init__(
        self,
        url_base: str,
        charge_point_id: str,
        version: OcppVersion = "1.6",
        *,
        connectors: int = 1,
        heartbeat_interval: float = 10.0,
        meter_interval: float = 5.0,
        subprotocols: Sequence[str] | None = None,
        basic_auth: tuple[str, str] | None = None,
        obey_profiles: bool = True,
        profile_delay: float = 0.0,
        answer_profiles: bool = True,
        phases: int = 3,
        max_current: float = 32.0,
        min_current: float = 6.0,
        open_timeout: float = 10.0,
        call_timeout: float = 10.0,
        close_timeout: float = 2.0,
        serial_number: str | None = None,
        clock: Clock | None = None,
        logger_context: Mapping[str, object] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if version not in ("1.6", "2.0.1"):
            raise SimulatorError(f"unsupported OCPP version {version!r}")
        if connectors < 1 or not 1 <= phases <= 3:
            raise SimulatorError("need at least one connector and 1 to 3 phases")
        if heartbeat_interval <= 0 or meter_interval <= 0:
            raise SimulatorError("intervals must be positive")
        if profile_delay < 0:
            raise SimulatorError("profile_delay must not be negative")
        self.url_base = url_base.rstrip("/")
        self.charge_point_id = charge_point_id
        self.requested_version: OcppVersion = version
        #: The version actually spoken; set from the negotiated subprotocol on connect.
        self.version: OcppVersion = version
        self.subprotocols = list(subprotocols) if subprotocols is not None else [f"ocpp{version}"]
        self.basic_auth = basic_auth
        self.obey_profiles = obey_profiles
        self.profile_delay = profile_delay
        self.answer_profiles = answer_profiles
        self.phases = phases
        self.max_current = max_current
        self.min_current = min_current
        self.heartbeat_interval = heartbeat_interval
        self.meter_interval = meter_interval
        self.open_timeout = open_timeout
        self.call_timeout = call_timeout
        self.close_timeout = close_timeout
        self.serial_number = (serial_number or f"SIM-{charge_point_id}")[:25]
        #: For wss://: the certificates to trust (e.g. a gateway box's self-signed one).
        self.ssl_context = ssl_context
        self.clock: Clock = clock or SystemClock()
        prefix = _context_prefix(charge_point_id, logger_context)
        self._log = _ContextLog(log, {"prefix": prefix})
        self._frame_log = _FrameLog(log, {"prefix": prefix})

        self.connectors = {i: ConnectorState(i) for i in range(1, connectors + 1)}
        self.profiles: list[InstalledProfile] = []
        #: (loop time, profiles) after each change, for `profile_delay`: the EV follows the
        #: snapshot that is `profile_delay` old. Only the snapshots it may still need are kept.
        self._profile_history: deque[tuple[float, tuple[InstalledProfile, ...]]] = deque()
        #: Every call the central system made, as (action, payload) in arrival order.
        self.received_calls: list[tuple[str, dict[str, Any]]] = []
        #: Every frame received, exactly as it arrived (all connections).
        self.raw_frames: list[str] = []
        #: Calls this charger made that were answered, by action.
        self.sent_counts: Counter[str] = Counter()
        self.boot_status: str | None = None
        self.transactions_started = 0
        self.subprotocol: str | None = None
        #: Set when the current connection has closed (a new one is made by `connect()`).
        self.closed = asyncio.Event()
        self.configuration: dict[str, tuple[str, bool]] = {}
        self.variables: dict[tuple[str, str], tuple[str, bool]] = {}
        self._init_settings()

        self._ws: ClientConnection | None = None
        self._station: _Station | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- connection -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{self.url_base}/{quote(self.charge_point_id, safe='')}"

    @property
    def websocket(self) -> ClientConnection | None:
        """The raw client connection, for tests that need to poke at it."""
        return self._ws

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._ws.state is State.OPEN

    async def connect(self) -> None:
        """Open the WebSocket and start answering the central system.

        Handshake failures are raised as websockets raises them (InvalidStatus,
        InvalidHandshake, OSError, TimeoutError) so that tests can look at the status code.
        """
        if self.connected:
            raise SimulatorError(f"{self.charge_point_id}: already connected")
        await self._drop_connection()
        headers: list[tuple[str, str]] = []
        if self.basic_auth is not None:
            user, password = self.basic_auth
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            headers.append(("Authorization", f"Basic {token}"))
        ws = await connect(
            self.url,
            subprotocols=[Subprotocol(s) for s in self.subprotocols] or None,
            additional_headers=headers or None,
            user_agent_header=f"HARMON-E-SimCharger/{__version__}",
            open_timeout=self.open_timeout,
            close_timeout=self.close_timeout,
            # Chargers rarely negotiate permessage-deflate, and a proxy from the environment
            # must never see simulator traffic.
            compression=None,
            proxy=None,
            ssl=(self.ssl_context or True) if self.url.startswith("wss:") else None,
        )
        self._ws = ws
        self.subprotocol = ws.subprotocol
        self.version = _VERSION_OF_SUBPROTOCOL.get(ws.subprotocol, self.requested_version)
        self.closed = asyncio.Event()
        station_cls = _Station16 if self.version == "1.6" else _Station201
        self._station = station_cls(self, ws, self._frame_log)
        self._reader = asyncio.create_task(self._read(), name=f"sim-{self.charge_point_id}")
        self._log.info("connected to %s (subprotocol %s)", self.url, ws.subprotocol)

    async def _read(self) -> None:
        assert self._station is not None and self._ws is not None
        try:
            await self._station.start()
        except ConnectionClosed as exc:
            self._log.info("connection closed: %s", exc)
        except Exception:
            self._log.exception("stopped reading after an unexpected error")
            await self._ws.close(1011, "simulator error")
        finally:
            self.closed.set()

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the current connection is closed (by either side)."""
        try:
            async with asyncio.timeout(timeout):
                await self.closed.wait()
        except TimeoutError:
            raise SimulatorError(f"{self.charge_point_id}: still connected") from None

    async def close(self) -> None:
        """Stop every task of this charger and close its connection; idempotent."""
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        ws, reader = self._ws, self._reader
        self._reader = None
        if ws is not None:
            await ws.close()
        if reader is not None:
            await reader

    async def __aenter__(self) -> SimulatedCharger:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(self._guard(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except SimulatorError as exc:
            self._log.warning("follow-up call failed: %s", exc)

    async def _call(self, payload: Any) -> Any:
        station = self._station
        if station is None or not self.connected:
            raise SimulatorError(f"{self.charge_point_id}: not connected")
        uid = str(uuid.uuid4())
        station.awaiting.add(uid)
        try:
            response = await _call_or_closed(station, payload, self.closed, unique_id=uid)
        finally:
            station.awaiting.discard(uid)
        self.sent_counts[type(payload).__name__] += 1
        return response

    # -- messages ---------------------------------------------------------------------------

    def _connector(self, connector_id: int) -> ConnectorState:
        try:
            return self.connectors[connector_id]
        except KeyError:
            raise SimulatorError(f"{self.charge_point_id}: no connector {connector_id}") from None

    def _ts(self) -> str:
        return _timestamp(self.clock)

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
            wire = _STATUS_16.get(status, status)
            if wire not in _VALID_16:
                raise SimulatorError(f"no OCPP 1.6 connector status {status!r}")
            error = "OtherError" if wire == "Faulted" else "NoError"
            payload: Any = call16.StatusNotification(
                connector_id=connector_id, error_code=error, status=wire, timestamp=self._ts()
            )
        else:
            wire = _STATUS_201.get(status, status)
            if wire not in _VALID_201:
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
                    trigger_reason=_STOP_TRIGGER_201.get(reason, "StopAuthorized"),
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

    # -- load -------------------------------------------------------------------------------

    def current_limit(self, connector_id: int) -> float | None:
        """The per-phase current (A) the installed profiles allow on a connector, if any."""
        return self._limit(self.profiles, connector_id, asyncio.get_running_loop().time())

    def _limit(
        self, profiles: Sequence[InstalledProfile], connector_id: int, now: float
    ) -> float | None:
        state = self._connector(connector_id)

        def best(purposes: tuple[str, ...], target: int) -> float | None:
            found = [p for p in profiles if p.purpose in purposes and p.connector_id == target]
            if not found:
                return None
            return max(found, key=lambda p: p.stack_level).limit_amps(now, self.phases)

        limit = None
        if state.transaction_id is not None or state.starting:
            limit = best(("TxProfile",), connector_id)
        if limit is None:
            limit = best(("TxDefaultProfile",), connector_id)
        if limit is None:
            limit = best(("TxDefaultProfile",), 0)
        cap = best(_STATION_MAX, 0)
        if cap is not None:
            limit = cap if limit is None else min(limit, cap)
        return limit

    def simulated_current(self, connector_id: int) -> float:
        """The per-phase current the EV on this connector draws right now."""
        state = self._connector(connector_id)
        if state.transaction_id is None or not state.operative:
            return 0.0
        limit = self._followed_limit(connector_id) if self.obey_profiles else None
        amps = self.max_current if limit is None else min(self.max_current, limit)
        # Below the IEC 61851 minimum an EV cannot charge at all.
        return amps if amps >= self.min_current else 0.0

    def _followed_limit(self, connector_id: int) -> float | None:
        """The limit the EV follows: the one in force `profile_delay` seconds ago."""
        now = asyncio.get_running_loop().time()
        if self.profile_delay <= 0:
            return self._limit(self.profiles, connector_id, now)
        then = now - self.profile_delay
        profiles: tuple[InstalledProfile, ...] = ()
        for at, snapshot in self._profile_history:
            if at > then:
                break
            profiles = snapshot
        return self._limit(profiles, connector_id, then)

    def _profiles_changed(self) -> None:
        if self.profile_delay <= 0:
            return
        now = asyncio.get_running_loop().time()
        history = self._profile_history
        history.append((now, tuple(self.profiles)))
        # The newest snapshot at least `profile_delay` old is the oldest one still followed.
        while len(history) > 1 and history[1][0] <= now - self.profile_delay:
            history.popleft()

    def _install_profile(self, connector_id: int, profile: dict[str, Any]) -> str:
        new = InstalledProfile(connector_id, profile, asyncio.get_running_loop().time())
        if connector_id != 0 and connector_id not in self.connectors:
            return "Rejected"
        if new.purpose == "TxProfile":
            state = self.connectors.get(connector_id)
            if state is None or (state.transaction_id is None and not state.starting):
                return "Rejected"  # the spec allows a TxProfile only during a transaction
        # Same id, or same purpose and stack level on the same connector: replaced (spec).
        self.profiles = [
            p
            for p in self.profiles
            if p.profile_id != new.profile_id
            and not (
                p.connector_id == connector_id
                and p.purpose == new.purpose
                and p.stack_level == new.stack_level
            )
        ]
        self.profiles.append(new)
        self._profiles_changed()
        self._log.info(
            "profile %s (%s) on connector %d: %.1f A",
            new.profile_id, new.purpose, connector_id, new.limit_amps(new.received_at, self.phases)
            or 0.0,
        )  # fmt: skip
        return "Accepted"

    def _clear_profiles(
        self, profile_id: Any, connector_id: Any, purpose: Any, stack_level: Any
    ) -> bool:
        def matches(p: InstalledProfile) -> bool:
            if profile_id is not None:
                return p.profile_id == int(profile_id)
            return (
                (connector_id is None or p.connector_id == connector_id)
                and (purpose is None or p.purpose == purpose)
                and (stack_level is None or p.stack_level == stack_level)
            )

        kept = [p for p in self.profiles if not matches(p)]
        removed = len(kept) != len(self.profiles)
        self.profiles = kept
        self._profiles_changed()
        return removed

    # -- reactions to the central system -------------------------------------------------

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

    def _triggered(self, message: str, connector_id: int | None) -> _Factory | None:
        cids = [connector_id] if connector_id in self.connectors else list(self.connectors)

        async def statuses() -> None:
            for cid in cids:
                await self.status(cid, self.connectors[cid].status)

        async def meters() -> None:
            for cid in cids:
                state = self.connectors[cid]
                await self.meter_values(cid, state.energy_wh, self.simulated_current(cid))

        factories: dict[str, _Factory] = {
            "BootNotification": self.boot,
            "Heartbeat": self.heartbeat,
            "StatusNotification": statuses,
            "MeterValues": meters,
        }
        if self.version == "2.0.1":
            factories["TransactionEvent"] = meters
        return factories.get(message)

    def _change_availability(
        self, connector_id: int, operative: bool, after: Callable[[_Factory], None]
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

    def _init_settings(self) -> None:
        n = str(len(self.connectors))
        self.configuration = {
            "HeartbeatInterval": (str(int(self.heartbeat_interval)), False),
            "MeterValueSampleInterval": (str(int(self.meter_interval)), False),
            "MeterValuesSampledData": ("Energy.Active.Import.Register,Current.Import", False),
            "NumberOfConnectors": (n, True),
            "ChargeProfileMaxStackLevel": ("8", True),
            "ChargingScheduleAllowedChargingRateUnit": ("Current,Power", True),
            "ChargingScheduleMaxPeriods": ("10", True),
            "MaxChargingProfilesInstalled": ("10", True),
            "SupportedFeatureProfiles": ("Core,SmartCharging,RemoteTrigger", True),
            "AuthorizeRemoteTxRequests": ("false", False),
            "ConnectionTimeOut": ("60", False),
        }
        self.variables = {
            ("OCPPCommCtrlr", "HeartbeatInterval"): (str(int(self.heartbeat_interval)), False),
            ("SampledDataCtrlr", "TxUpdatedInterval"): (str(int(self.meter_interval)), False),
            ("SmartChargingCtrlr", "Enabled"): ("true", False),
            ("SmartChargingCtrlr", "RateUnit"): ("A,W", True),
            ("SmartChargingCtrlr", "ProfileStackLevel"): ("8", True),
            ("SmartChargingCtrlr", "PeriodsPerSchedule"): ("10", True),
            ("AuthCtrlr", "AuthorizeRemoteStart"): ("false", False),
            ("ChargingStation", "Model"): (MODEL, True),
            ("ChargingStation", "VendorName"): (VENDOR, True),
            ("EVSE", "Count"): (n, True),
        }

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

    # -- scenario ---------------------------------------------------------------------------

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
