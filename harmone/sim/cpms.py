"""A minimal CPMS (central system) on a real localhost socket, for tests and demos.

It accepts chargers at `/{chargePointId}`, answers the core messages of OCPP 1.6, 2.0.1 and
2.1 itself (through the `ocpp` package, so answers are schema-valid), and records what a relay
test needs to prove transparency: the handshake headers, the negotiated subprotocol and every
frame exactly as it arrived. It can refuse or slow down handshakes and be stopped and started
on the same port to play an outage.
"""

from __future__ import annotations

import asyncio
import http
import itertools
import json
import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from ocpp.charge_point import ChargePoint as _OcppChargePoint
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v21 import call as call21
from ocpp.v21 import call_result as result21
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, NegotiationError
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from harmone.clock import Clock, SystemClock
from harmone.errors import SimulatorError
from harmone.sim.peer import (
    ContextLog,
    FrameLog,
    answer_unhandled,
    call_or_closed,
    frame_text,
    is_stray_answer,
    on,
    timestamp,
)

__all__ = ["DEFAULT_SUBPROTOCOLS", "Handshake", "MessageListener", "SimulatedCpms"]

log = logging.getLogger(__name__)

DEFAULT_SUBPROTOCOLS = ("ocpp1.6", "ocpp2.0.1", "ocpp2.1")
_VERSION_OF_SUBPROTOCOL = {"ocpp1.6": "1.6", "ocpp2.0.1": "2.0.1", "ocpp2.1": "2.1"}

#: Called with (chargePointId, action, payload) for every frame received. For a CALLRESULT the
#: action is "CallResult"; for a CALLERROR it is "CallError" and the payload is
#: [code, description, details].
MessageListener = Callable[[str, str, Any], None]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Handshake:
    """One opening handshake the CPMS answered, accepted or not."""

    charge_point_id: str
    path: str
    headers: Headers
    offered_subprotocols: tuple[str, ...]
    #: HTTP status answered: 101 when the WebSocket was accepted.
    status: int
    subprotocol: str | None


def _charge_point_id(path: str) -> str:
    # The charge point id is the last path segment, whatever prefix the CPMS URL has.
    return unquote(urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1])


@dataclass
class _Session:
    charge_point_id: str
    ws: ServerConnection
    version: str
    station: Any = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class _CsmsStation(_OcppChargePoint):  # type: ignore[misc]  # the ocpp package is untyped
    """Answers one charger; records every frame before the ocpp package sees it."""

    def __init__(self, cpms: SimulatedCpms, cpid: str, ws: ServerConnection, logger: Any) -> None:
        super().__init__(cpid, ws, response_timeout=cpms.call_timeout, logger=logger)
        self.cpms = cpms
        #: Ids of calls made with SimulatedCpms.call(): only their answers go to the ocpp
        #: package, so that answers to raw frames sent by tests do not confuse it.
        self.awaiting: set[str] = set()

    async def route_message(self, raw_msg: Any) -> None:
        text = frame_text(raw_msg)
        self.cpms._record_frame(self.id, text)
        if is_stray_answer(text, self.awaiting):
            return
        await super().route_message(raw_msg)

    async def _handle_call(self, msg: Any) -> Any:
        self.cpms._record_call(self.id, str(msg.action), msg.payload)
        if await answer_unhandled(self, msg):
            return None
        return await super()._handle_call(msg)

    def _now(self) -> str:
        return timestamp(self.cpms.clock)


class _Csms16(_CsmsStation):
    _call = call16
    _call_result = result16
    _ocpp_version = "1.6"

    @on("BootNotification")
    def on_boot_notification(self, **_: Any) -> Any:
        return result16.BootNotification(
            current_time=self._now(),
            interval=self.cpms.heartbeat_interval,
            status=self.cpms.boot_status,
        )

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return result16.Heartbeat(current_time=self._now())

    @on("StatusNotification")
    def on_status_notification(self, **_: Any) -> Any:
        return result16.StatusNotification()

    @on("Authorize")
    def on_authorize(self, **_: Any) -> Any:
        return result16.Authorize(id_tag_info={"status": self.cpms.authorize_status})

    @on("StartTransaction")
    def on_start_transaction(self, **_: Any) -> Any:
        return result16.StartTransaction(
            transaction_id=self.cpms._next_transaction_id(),
            id_tag_info={"status": self.cpms.authorize_status},
        )

    @on("StopTransaction")
    def on_stop_transaction(self, id_tag: str | None = None, **_: Any) -> Any:
        if id_tag is None:
            return result16.StopTransaction()
        return result16.StopTransaction(id_tag_info={"status": "Accepted"})

    @on("MeterValues")
    def on_meter_values(self, **_: Any) -> Any:
        return result16.MeterValues()

    @on("DataTransfer")
    def on_data_transfer(self, **_: Any) -> Any:
        return result16.DataTransfer(status="Accepted")

    @on("DiagnosticsStatusNotification")
    def on_diagnostics_status_notification(self, **_: Any) -> Any:
        return result16.DiagnosticsStatusNotification()

    @on("FirmwareStatusNotification")
    def on_firmware_status_notification(self, **_: Any) -> Any:
        return result16.FirmwareStatusNotification()

    @on("SecurityEventNotification")
    def on_security_event_notification(self, **_: Any) -> Any:
        return result16.SecurityEventNotification()

    @on("LogStatusNotification")
    def on_log_status_notification(self, **_: Any) -> Any:
        return result16.LogStatusNotification()

    @on("SignedFirmwareStatusNotification")
    def on_signed_firmware_status_notification(self, **_: Any) -> Any:
        return result16.SignedFirmwareStatusNotification()


class _Csms201(_CsmsStation):
    """2.0.1 answers; 2.1 reuses them (`self._call_result` picks the version's classes)."""

    _call = call201
    _call_result = result201
    _ocpp_version = "2.0.1"

    @on("BootNotification")
    def on_boot_notification(self, **_: Any) -> Any:
        return self._call_result.BootNotification(
            current_time=self._now(),
            interval=self.cpms.heartbeat_interval,
            status=self.cpms.boot_status,
        )

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return self._call_result.Heartbeat(current_time=self._now())

    @on("StatusNotification")
    def on_status_notification(self, **_: Any) -> Any:
        return self._call_result.StatusNotification()

    @on("Authorize")
    def on_authorize(self, **_: Any) -> Any:
        return self._call_result.Authorize(id_token_info={"status": self.cpms.authorize_status})

    @on("TransactionEvent")
    def on_transaction_event(self, id_token: Any = None, **_: Any) -> Any:
        if id_token is None:
            return self._call_result.TransactionEvent()
        info = {"status": self.cpms.authorize_status}
        return self._call_result.TransactionEvent(id_token_info=info)

    @on("MeterValues")
    def on_meter_values(self, **_: Any) -> Any:
        return self._call_result.MeterValues()

    @on("DataTransfer")
    def on_data_transfer(self, **_: Any) -> Any:
        return self._call_result.DataTransfer(status="Accepted")

    @on("NotifyReport")
    def on_notify_report(self, **_: Any) -> Any:
        return self._call_result.NotifyReport()

    @on("NotifyEvent")
    def on_notify_event(self, **_: Any) -> Any:
        return self._call_result.NotifyEvent()

    @on("NotifyChargingLimit")
    def on_notify_charging_limit(self, **_: Any) -> Any:
        return self._call_result.NotifyChargingLimit()

    @on("ReportChargingProfiles")
    def on_report_charging_profiles(self, **_: Any) -> Any:
        return self._call_result.ReportChargingProfiles()

    @on("SecurityEventNotification")
    def on_security_event_notification(self, **_: Any) -> Any:
        return self._call_result.SecurityEventNotification()

    @on("FirmwareStatusNotification")
    def on_firmware_status_notification(self, **_: Any) -> Any:
        return self._call_result.FirmwareStatusNotification()

    @on("LogStatusNotification")
    def on_log_status_notification(self, **_: Any) -> Any:
        return self._call_result.LogStatusNotification()


class _Csms21(_Csms201):
    _call = call21
    _call_result = result21
    _ocpp_version = "2.1"


_STATIONS: dict[str, type[_CsmsStation]] = {"1.6": _Csms16, "2.0.1": _Csms201, "2.1": _Csms21}


class SimulatedCpms:
    """A CPMS listening on `host:port` (port 0: an ephemeral port, kept across restarts).

    `refuse_status`, `accept_delay`, `boot_status` and `authorize_status` are plain
    attributes: tests may change them while the server runs; they apply to the next
    handshake or message.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        subprotocols: Sequence[str] = DEFAULT_SUBPROTOCOLS,
        refuse_status: int | None = None,
        accept_delay: float = 0.0,
        transaction_id_start: int = 1,
        heartbeat_interval: int = 60,
        boot_status: str = "Accepted",
        authorize_status: str = "Accepted",
        call_timeout: float = 10.0,
        close_timeout: float = 2.0,
        on_message: MessageListener | None = None,
        record: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self.subprotocols = list(subprotocols)
        self.refuse_status = refuse_status
        self.accept_delay = accept_delay
        self.heartbeat_interval = heartbeat_interval
        self.boot_status = boot_status
        self.authorize_status = authorize_status
        self.call_timeout = call_timeout
        self.close_timeout = close_timeout
        self.on_message = on_message
        #: False keeps no frames or calls (a long-running `harmone simulate-cpms`); the
        #: wait_for helpers then have nothing to find.
        self.record = record
        self.clock: Clock = clock or SystemClock()
        self._transaction_ids = itertools.count(transaction_id_start)

        #: Every frame received from each charger, exactly as it arrived.
        self.raw_frames: defaultdict[str, list[str]] = defaultdict(list)
        #: Every CALL received from each charger, as (action, payload).
        self.calls: defaultdict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        #: Headers of each charger's latest handshake.
        self.request_headers: dict[str, Headers] = {}
        #: Subprotocol negotiated on each charger's latest accepted connection.
        self.negotiated_subprotocol: dict[str, str | None] = {}
        #: Every handshake answered, in order.
        self.handshakes: list[Handshake] = []
        #: How many connections were accepted per charger.
        self.connection_count: Counter[str] = Counter()

        self._server: Server | None = None
        self._sessions: dict[str, _Session] = {}
        # Replaced on every change, so that waiters never miss an update.
        self._changed = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port == 0:
            raise SimulatorError("the simulated CPMS has no port until it has started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL to give a charger (or HARMON-E): the charger appends `/{id}`."""
        return f"ws://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (again, on the same port after a restart)."""
        if self._server is not None:
            raise SimulatorError("the simulated CPMS is already running")
        self._server = await serve(
            self._serve_connection,
            self.host,
            self._port,
            subprotocols=[Subprotocol(s) for s in self.subprotocols],
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            process_response=self._process_response,
            compression=None,
            close_timeout=self.close_timeout,
        )
        if self._port == 0:
            self._port = int(self._server.sockets[0].getsockname()[1])
        log.info("simulated CPMS listening on %s", self.url)

    async def stop(self) -> None:
        """Close every connection (code 1001) and the listening socket; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await server.wait_closed()
        log.info("simulated CPMS on port %d stopped", self._port)

    async def __aenter__(self) -> SimulatedCpms:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- handshake --------------------------------------------------------------------------

    def _select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        # OCPP-J lets the charger list its versions by preference; honour its order, which
        # the websockets default (the server's order) would not.
        for sub in offered:
            if sub in self.subprotocols:
                return sub
        if not offered:
            return None  # treated as OCPP 1.6, as many 1.6 chargers omit the header
        raise NegotiationError(f"none of {', '.join(offered)} is supported")

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        if self.accept_delay > 0:
            await asyncio.sleep(self.accept_delay)
        if not _charge_point_id(request.path):
            return connection.respond(http.HTTPStatus.NOT_FOUND, "no charge point id\n")
        if self.refuse_status is not None:
            return connection.respond(self.refuse_status, "refused by the simulated CPMS\n")
        return None

    def _process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> None:
        cpid = _charge_point_id(request.path)
        offered = [
            s.strip()
            for value in request.headers.get_all("Sec-WebSocket-Protocol")
            for s in value.split(",")
        ]
        sub = response.headers.get("Sec-WebSocket-Protocol")
        self.request_headers[cpid] = request.headers
        self.handshakes.append(
            Handshake(
                cpid, request.path, request.headers, tuple(offered), response.status_code, sub
            )
        )
        self._notify()

    async def _serve_connection(self, ws: ServerConnection) -> None:
        assert ws.request is not None  # the handler only runs after a handshake
        cpid = _charge_point_id(ws.request.path)
        version = _VERSION_OF_SUBPROTOCOL.get(ws.subprotocol or "", "1.6")
        ctx = {"prefix": f"cpms cp={cpid}"}
        session = _Session(cpid, ws, version)
        session.station = _STATIONS[version](self, cpid, ws, FrameLog(log, ctx))
        old = self._sessions.get(cpid)
        self._sessions[cpid] = session
        self.negotiated_subprotocol[cpid] = ws.subprotocol
        self.connection_count[cpid] += 1
        self._notify()
        clog = ContextLog(log, ctx)
        clog.info("connected (subprotocol %s)", ws.subprotocol)
        if old is not None:
            # A charger that reconnects replaces its old connection, as real CPMSs do.
            await old.ws.close(1000, "replaced by a new connection")
        try:
            await session.station.start()
        except ConnectionClosed as exc:
            clog.info("disconnected: %s", exc)
        except Exception:
            clog.exception("connection failed")
        finally:
            session.closed.set()
            if self._sessions.get(cpid) is session:
                del self._sessions[cpid]
            self._notify()

    # -- records ----------------------------------------------------------------------------

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _record_frame(self, cpid: str, text: str) -> None:
        if self.record:
            self.raw_frames[cpid].append(text)
        try:
            frame = json.loads(text)
        except ValueError:
            frame = None
        if self.on_message is not None and isinstance(frame, list) and len(frame) >= 3:
            if frame[0] == 2 and len(frame) >= 4:
                self.on_message(cpid, str(frame[2]), frame[3])
            elif frame[0] == 3:
                self.on_message(cpid, "CallResult", frame[2])
            elif frame[0] == 4:
                self.on_message(cpid, "CallError", frame[2:])
        self._notify()

    def _record_call(self, cpid: str, action: str, payload: Any) -> None:
        if self.record:
            self.calls[cpid].append((action, payload if isinstance(payload, dict) else {}))
            self._notify()

    def _next_transaction_id(self) -> int:
        return next(self._transaction_ids)

    # -- driving chargers -------------------------------------------------------------------

    def connected(self, cpid: str) -> bool:
        session = self._sessions.get(cpid)
        return session is not None and session.ws.state is State.OPEN

    def version(self, cpid: str) -> str:
        """OCPP version spoken with a connected charger: "1.6", "2.0.1" or "2.1"."""
        return self._session(cpid).version

    def _session(self, cpid: str) -> _Session:
        session = self._sessions.get(cpid)
        if session is None or session.ws.state is not State.OPEN:
            raise SimulatorError(f"charger {cpid} is not connected to the simulated CPMS")
        return session

    async def call(self, cpid: str, payload: Any) -> Any:
        """Send a call (an `ocpp.v16.call` / `v201.call` object) and return the answer.

        Raises SimulatorError when the charger is not connected, answers with a CallError
        (the ocpp exception is the cause), does not answer within `call_timeout` or
        disconnects.
        """
        session = self._session(cpid)
        uid = str(uuid.uuid4())
        session.station.awaiting.add(uid)
        try:
            return await call_or_closed(session.station, payload, session.closed, unique_id=uid)
        finally:
            session.station.awaiting.discard(uid)

    async def send_raw(self, cpid: str, text: str) -> None:
        """Send `text` as one text frame, unchanged (for byte-exact relay tests)."""
        await self._session(cpid).ws.send(text)

    async def disconnect(self, cpid: str, code: int = 1000, reason: str = "") -> None:
        """Close one charger's connection from the CPMS side."""
        session = self._sessions.get(cpid)
        if session is not None:
            await session.ws.close(code, reason)
            await session.closed.wait()

    async def _wait(self, check: Callable[[], _T | None], seconds: float, what: str) -> _T:
        try:
            async with asyncio.timeout(seconds):
                while True:
                    changed = self._changed
                    found = check()
                    if found is not None:
                        return found
                    await changed.wait()
        except TimeoutError:
            raise SimulatorError(f"timed out after {seconds} s waiting for {what}") from None

    async def wait_for(
        self,
        cpid: str,
        predicate: Callable[[str, dict[str, Any]], bool],
        timeout: float = 5.0,
        *,
        after: int = 0,
    ) -> tuple[str, dict[str, Any]]:
        """The first call from `cpid` (from index `after`) for which predicate(action, payload)."""

        def check() -> tuple[str, dict[str, Any]] | None:
            for action, payload in self.calls[cpid][after:]:
                if predicate(action, payload):
                    return action, payload
            return None

        return await self._wait(check, timeout, f"a matching call from {cpid}")

    async def wait_for_frame(
        self,
        cpid: str,
        predicate: Callable[[str], bool],
        timeout: float = 5.0,
        *,
        after: int = 0,
    ) -> str:
        """The first raw frame from `cpid` (from index `after`) for which predicate(text)."""

        def check() -> str | None:
            return next((f for f in self.raw_frames[cpid][after:] if predicate(f)), None)

        return await self._wait(check, timeout, f"a matching frame from {cpid}")

    async def wait_connected(self, cpid: str, timeout: float = 5.0) -> None:
        await self._wait(lambda: True if self.connected(cpid) else None, timeout, cpid)

    async def wait_disconnected(self, cpid: str, timeout: float = 5.0) -> None:
        await self._wait(
            lambda: None if self.connected(cpid) else True, timeout, f"{cpid} to disconnect"
        )
