"""A simulated charger's state and its WebSocket connection to the central system.

`ChargerConnection` holds everything a `SimulatedCharger` knows and owns the connection: the
handshake (subprotocols, HTTP Basic), the reader task, one call at a time to the central system,
and the follow-up tasks its handlers start. The other `charger_*` modules add to it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import uuid
from collections import Counter, deque
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self, cast
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.typing import Subprotocol

from harmone import __version__
from harmone.clock import Clock, SystemClock
from harmone.errors import SimulatorError
from harmone.sim.charger_state import (
    VERSION_OF_SUBPROTOCOL,
    ConnectorState,
    InstalledProfile,
    OcppVersion,
    initial_settings,
)
from harmone.sim.charger_stations import Station, Station16, Station201
from harmone.sim.peer import ContextLog, FrameLog, call_or_closed, context_prefix, timestamp

if TYPE_CHECKING:
    from harmone.sim.charger import SimulatedCharger

__all__ = ["ChargerConnection"]

# The simulator's log lines keep the name they always had, whichever module writes them.
log = logging.getLogger("harmone.sim.charger")


class ChargerConnection:
    """The state of one simulated charger and its connection (see `SimulatedCharger`)."""

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
        prefix = context_prefix(charge_point_id, logger_context)
        self._log = ContextLog(log, {"prefix": prefix})
        self._frame_log = FrameLog(log, {"prefix": prefix})

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
        self.configuration: dict[str, tuple[str, bool]]
        self.variables: dict[tuple[str, str], tuple[str, bool]]
        self.configuration, self.variables = initial_settings(
            heartbeat_interval, meter_interval, connectors
        )

        self._ws: ClientConnection | None = None
        self._station: Station | None = None
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
        self.version = VERSION_OF_SUBPROTOCOL.get(ws.subprotocol, self.requested_version)
        self.closed = asyncio.Event()
        station_cls = Station16 if self.version == "1.6" else Station201
        # The handlers act on the whole charger, of which this class is the base.
        self._station = station_cls(cast("SimulatedCharger", self), ws, self._frame_log)
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

    async def __aenter__(self) -> Self:
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
            response = await call_or_closed(station, payload, self.closed, unique_id=uid)
        finally:
            station.awaiting.discard(uid)
        self.sent_counts[type(payload).__name__] += 1
        return response

    def _connector(self, connector_id: int) -> ConnectorState:
        try:
            return self.connectors[connector_id]
        except KeyError:
            raise SimulatorError(f"{self.charge_point_id}: no connector {connector_id}") from None

    def _ts(self) -> str:
        return timestamp(self.clock)
