"""Power meters: read the building load at a node over Modbus TCP, or take it pushed over REST.

`ModbusMeterReader` reads one meter once (`read_once() -> Measurement`), with the register map
of its family (`register_maps`). `MeterPoller` runs one loop per meter on its interval and hands
every reading to a callback. When a meter stops answering it delivers a *failed* measurement, so
that the allocator drops the node's limit to its Safety Current instead of trusting a reading
that grows older; when the meter answers again, real readings resume. `measurement_from_push`
checks a reading that a meter gateway pushed to the REST API.

Errors: `MeterError` (a `RetryableError`) with `MeterNoAnswer` and `MeterBadAnswer` below it,
defined in `register_maps` and re-exported here. Durations are in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from harmone.clock import Clock, SystemClock
from harmone.errors import ConfigError
from harmone.loadmgmt.model import DEFAULT_VOLTAGE, Measurement
from harmone.loadmgmt.register_maps import (
    MAX_PLAUSIBLE_CURRENT,
    MeterBadAnswer,
    MeterError,
    MeterNoAnswer,
    RegisterMap,
    RegisterType,
    custom_register_map,
    phase_currents,
    register_map_by_name,
)

__all__ = [
    "MeterBadAnswer",
    "MeterConfig",
    "MeterError",
    "MeterHealth",
    "MeterNoAnswer",
    "MeterPoller",
    "MeterStatus",
    "ModbusMeterReader",
    "measurement_from_push",
]

logger = logging.getLogger(__name__)

_EXCEPTION_CODES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


def _seconds(value: object, what: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a number of seconds, got {value!r}")
    if value <= minimum:
        raise ConfigError(f"{what} must be more than {minimum:g} s, got {value!r}")
    return float(value)


def _int_in(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{what} must be an integer {low}..{high}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class MeterConfig:
    """One Modbus TCP meter measuring the building load through node `node_id`.

    `register_map` is a built-in map's name or a `RegisterMap` (see `custom_register_map`). The
    meter counts as failed after `failures_before_failed` polls in a row went wrong, or when its
    last good reading is older than `max_age`, whichever comes first.
    """

    node_id: str
    host: str
    port: int = 502
    unit_id: int = 1
    register_map: RegisterMap | str = "eastron_sdm630"
    poll_interval: float = 5.0
    timeout: float = 2.0
    failures_before_failed: int = 3
    max_age: float = 60.0

    def __post_init__(self) -> None:
        for name in ("node_id", "host"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"meter {name} must be a non-empty string")
        who = f"meter of node {self.node_id!r}"
        _int_in(self.port, f"{who} port", 1, 65535)
        # Modbus TCP unit ids are one byte; gateways to RS485 use 1..247, some devices 0 or 255.
        _int_in(self.unit_id, f"{who} unit id", 0, 255)
        if isinstance(self.register_map, str):
            object.__setattr__(self, "register_map", register_map_by_name(self.register_map))
        elif not isinstance(self.register_map, RegisterMap):
            raise ConfigError(f"{who} register_map must be a name or a RegisterMap")
        _seconds(self.poll_interval, f"{who} poll_interval")
        _seconds(self.timeout, f"{who} timeout")
        _int_in(self.failures_before_failed, f"{who} failures_before_failed", 1, 1000)
        _seconds(self.max_age, f"{who} max_age")
        if self.max_age < self.poll_interval:
            raise ConfigError(f"{who} max_age must be at least its poll_interval")

    @property
    def map(self) -> RegisterMap:
        """The register map (always a `RegisterMap` after construction)."""
        assert isinstance(self.register_map, RegisterMap)
        return self.register_map

    @property
    def label(self) -> str:
        """How people name this meter in logs: "192.0.2.10:502 unit 1 (SDM630)"."""
        return f"{self.host}:{self.port} unit {self.unit_id} ({self.map.title})"

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> MeterConfig:
        """From configuration data; `"register_map": "custom"` takes its map from `"custom"`."""
        values = dict(data)
        if values.get("register_map") == "custom":
            custom = values.pop("custom", None)
            if not isinstance(custom, Mapping):
                raise ConfigError('meter "register_map": "custom" needs a "custom" mapping')
            values["register_map"] = custom_register_map(custom)
        elif "custom" in values:
            raise ConfigError('meter "custom" registers need "register_map": "custom"')
        try:
            return cls(**values)  # type: ignore[arg-type]  # each field is checked on construction
        except TypeError as exc:
            raise ConfigError(f"meter configuration: {exc}") from None


async def _why_unreachable(host: str, port: int, timeout: float) -> str:
    # pymodbus reports a failed connect only as False; one plain connect attempt tells people
    # *why* (refused, unknown host, no route), which is what they need to fix it.
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"no connection within {timeout:g} s"
    except ConnectionRefusedError:
        return "connection refused"
    except socket.gaierror:
        return f"host {host!r} not found"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return "connection failed"


class ModbusMeterReader:
    """Reads one meter's per-phase currents over Modbus TCP; reconnects on its own.

    After any failure the connection is dropped and the next `read_once` opens a new one, so a
    late answer to an old request can never be taken for the answer to a new one.
    """

    def __init__(self, config: MeterConfig, clock: Clock | None = None) -> None:
        self.config = config
        self._clock = clock or SystemClock()
        self._client: AsyncModbusTcpClient | None = None

    async def read_once(self) -> Measurement:
        """One reading, or `MeterNoAnswer` / `MeterBadAnswer` saying why there is none."""
        try:
            # pymodbus bounds each step by `timeout`; this bounds the whole read in case it
            # does not (connect, explain a failed connect, one request per block).
            steps = 2 + len(self.config.map.blocks())
            async with asyncio.timeout(self.config.timeout * steps + 1.0):
                words = await self._read_registers()
        except MeterError:
            await self.aclose()
            raise
        except TimeoutError:
            await self.aclose()
            raise MeterNoAnswer(f"no answer within {self.config.timeout:g} s") from None
        except (ModbusException, OSError) as exc:
            await self.aclose()
            raise MeterNoAnswer(_modbus_reason(exc, self.config.timeout)) from None
        load = phase_currents(self.config.map, words)
        return Measurement(self.config.node_id, load, self._clock.now())

    async def _read_registers(self) -> dict[int, int]:
        cfg = self.config
        if self._client is None or not self._client.connected:
            await self.aclose()
            # reconnect_delay=0: reconnecting is ours (on the next poll); pymodbus' own
            # background reconnect task would outlive stop(). retries=0: the poller retries.
            client = AsyncModbusTcpClient(
                cfg.host, port=cfg.port, timeout=cfg.timeout, retries=0, reconnect_delay=0
            )
            self._client = client
            if not await client.connect():
                raise MeterNoAnswer(await _why_unreachable(cfg.host, cfg.port, cfg.timeout))
        words: dict[int, int] = {}
        for start, count in cfg.map.blocks():
            words.update(await self._read_block(self._client, start, count))
        return words

    async def _read_block(
        self, client: AsyncModbusTcpClient, start: int, count: int
    ) -> dict[int, int]:
        cfg = self.config
        if cfg.map.register_type is RegisterType.INPUT:
            reply: ModbusPDU = await client.read_input_registers(
                start, count=count, device_id=cfg.unit_id
            )
        else:
            reply = await client.read_holding_registers(start, count=count, device_id=cfg.unit_id)
        what = f"{cfg.map.register_type} registers 0x{start:04X}..0x{start + count - 1:04X}"
        if reply.isError():
            code = reply.exception_code
            name = _EXCEPTION_CODES.get(code, "unknown")
            raise MeterBadAnswer(f"Modbus exception {code} ({name}) reading {what}")
        registers = list(reply.registers)
        if len(registers) != count:
            raise MeterBadAnswer(f"{len(registers)} registers instead of {count} reading {what}")
        return {start + i: value for i, value in enumerate(registers)}

    async def aclose(self) -> None:
        """Close the connection (the next read opens a new one)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
            # Let the transport finish closing its socket before anyone closes the loop.
            await asyncio.sleep(0)


def _modbus_reason(exc: BaseException, timeout: float) -> str:
    # pymodbus' messages are for developers; people need "what happened" in a few words.
    text = str(exc)
    if "No response" in text:
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ConnectionException | ConnectionError):
        return "connection lost"
    return text.removeprefix("Modbus Error: ").strip() or type(exc).__name__


# --- polling many meters --------------------------------------------------------------------------


class MeterHealth(StrEnum):
    STARTING = "starting"  # no poll finished yet
    OK = "ok"
    FAILED = "failed"  # the node is at its safety current


@dataclass(frozen=True, slots=True)
class MeterStatus:
    """What the API shows for one meter; `last_reading` is its last good reading."""

    node_id: str
    meter: str
    health: MeterHealth
    last_reading: Measurement | None
    last_error: str | None
    last_success: datetime | None
    consecutive_failures: int


@dataclass(slots=True)
class _MeterState:
    config: MeterConfig
    reader: ModbusMeterReader
    started: float
    health: MeterHealth = MeterHealth.STARTING
    last_reading: Measurement | None = None
    last_error: str | None = None
    last_success: datetime | None = None
    last_success_mono: float | None = None
    failures: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


OnMeasurement = Callable[[Measurement], Awaitable[None] | None]


class MeterPoller:
    """Polls many meters concurrently, each on its own interval, and reports every reading.

    `on_measurement` gets each good reading and, once a meter is failed, a failed measurement
    (load 0, `failed=True`) on every poll until it answers again. It may be a plain function or
    a coroutine function; an exception in it is logged and polling goes on.

    `clock` schedules the polls and dates the readings, `sleep` waits for the next poll: a test
    passes a manual clock and its sleep to decide exactly when each poll happens.
    """

    def __init__(
        self,
        meters: Iterable[MeterConfig],
        on_measurement: OnMeasurement,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._on_measurement = on_measurement
        self._meters: dict[str, _MeterState] = {}
        for config in meters:
            if not isinstance(config, MeterConfig):
                raise ConfigError(f"expected a MeterConfig, got {config!r}")
            if config.node_id in self._meters:
                # Two meters on one node would overwrite each other's readings.
                raise ConfigError(f"node {config.node_id!r} has more than one meter")
            reader = ModbusMeterReader(config, self._clock)
            self._meters[config.node_id] = _MeterState(config, reader, self._clock.monotonic())

    def start(self) -> None:
        """Start one polling task per meter (call from the running event loop)."""
        for state in self._meters.values():
            if state.task is None:
                state.started = self._clock.monotonic()
                state.task = asyncio.create_task(
                    self._poll(state), name=f"meter {state.config.node_id}"
                )

    async def stop(self) -> None:
        """Cancel and await every polling task, then close every connection."""
        tasks = [s.task for s in self._meters.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for state in self._meters.values():
            state.task = None
            await state.reader.aclose()

    def status(self) -> dict[str, MeterStatus]:
        """Per node id: health, last reading, last error and last success of its meter."""
        return {
            node_id: MeterStatus(
                node_id=node_id,
                meter=s.config.label,
                health=s.health,
                last_reading=s.last_reading,
                last_error=s.last_error,
                last_success=s.last_success,
                consecutive_failures=s.failures,
            )
            for node_id, s in self._meters.items()
        }

    async def _poll(self, state: _MeterState) -> None:
        clock = self._clock
        interval = state.config.poll_interval
        next_at = clock.monotonic()
        while True:
            try:
                measurement = await state.reader.read_once()
            except MeterError as exc:
                await self._failed(state, str(exc))
            else:
                await self._answered(state, measurement)
            next_at += interval
            # A slow meter shifts its schedule rather than being polled back-to-back.
            next_at = max(next_at, clock.monotonic())
            await self._sleep(next_at - clock.monotonic())

    async def _answered(self, state: _MeterState, measurement: Measurement) -> None:
        if state.health is MeterHealth.FAILED:
            logger.info(
                "meter %s of node %s answers again after %d failed polls",
                state.config.label,
                state.config.node_id,
                state.failures,
            )
        state.health = MeterHealth.OK
        state.failures = 0
        state.last_error = None
        state.last_reading = measurement
        state.last_success = measurement.at
        state.last_success_mono = self._clock.monotonic()
        await self._deliver(measurement)

    async def _failed(self, state: _MeterState, reason: str) -> None:
        cfg = state.config
        now = self._clock.monotonic()
        state.failures += 1
        state.last_error = reason
        since = state.started if state.last_success_mono is None else state.last_success_mono
        silent_for = now - since
        if state.health is not MeterHealth.FAILED:
            if state.failures < cfg.failures_before_failed and silent_for < cfg.max_age:
                logger.debug("meter %s poll failed (%d): %s", cfg.label, state.failures, reason)
                return
            state.health = MeterHealth.FAILED
            logger.warning(
                "meter %s did not answer for %s: %s; node %s falls to its safety current",
                cfg.label,
                _duration(silent_for),
                reason,
                cfg.node_id,
            )
        await self._deliver(
            Measurement(cfg.node_id, (0.0, 0.0, 0.0), self._clock.now(), failed=True)
        )

    async def _deliver(self, measurement: Measurement) -> None:
        try:
            result = self._on_measurement(measurement)
            if inspect.isawaitable(result):
                await result
        except Exception:
            # A consumer bug must not stop the meter loop that guards the fuse.
            logger.exception("on_measurement failed for node %s", measurement.node_id)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


# --- pushed readings ------------------------------------------------------------------------------

_PUSH_KEYS = frozenset({"current", "power", "voltage", "at"})


def _three(payload: Mapping[str, object], key: str, unit: str, limit: float) -> list[float]:
    values = payload[key]
    if not isinstance(values, list | tuple) or len(values) != 3:
        raise ConfigError(f'"{key}" must be a list of 3 numbers (L1, L2, L3), got {values!r}')
    out = []
    for phase, value in enumerate(values, start=1):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f'"{key}" L{phase} must be a number, got {value!r}')
        if not math.isfinite(value) or abs(value) > limit:
            raise ConfigError(f'"{key}" L{phase} must be within ±{limit:g} {unit}, got {value!r}')
        out.append(float(value))
    return out


def _push_time(text: object, now: datetime, max_skew: timedelta) -> datetime:
    at: datetime | None = None
    if isinstance(text, str):
        with contextlib.suppress(ValueError):
            at = datetime.fromisoformat(text)
    if at is None or at.utcoffset() is None:
        raise ConfigError(f'"at" must be an ISO 8601 time with a UTC offset, got {text!r}')
    if at > now + max_skew:
        raise ConfigError(f'"at" {text} is in the future (now is {now.isoformat()})')
    return at


def measurement_from_push(
    node_id: str,
    payload: Mapping[str, object],
    now: datetime,
    *,
    max_skew: timedelta = timedelta(seconds=5),
) -> Measurement:
    """A reading pushed to the REST API, checked: ``{"current": [l1, l2, l3]}`` in A, or
    ``{"power": [w1, w2, w3], "voltage": 230}`` in W (voltage per phase to neutral, default
    230 V). Negative values mean export. Optional ``"at"``: an ISO 8601 time with a UTC offset,
    not later than `now` + `max_skew` (clocks drift; readings from the future do not exist).
    """
    if now.utcoffset() is None:
        raise ConfigError("now must be a timezone-aware datetime")
    if not isinstance(payload, Mapping):
        raise ConfigError(f"a pushed reading must be a JSON object, got {type(payload).__name__}")
    unknown = sorted(set(payload) - _PUSH_KEYS)
    if unknown:
        raise ConfigError(f"a pushed reading has unknown fields {unknown}")
    if ("current" in payload) == ("power" in payload):
        raise ConfigError('a pushed reading needs exactly one of "current" or "power"')
    if "current" in payload:
        if "voltage" in payload:
            raise ConfigError('"voltage" only goes with "power"')
        amps = _three(payload, "current", "A", MAX_PLAUSIBLE_CURRENT)
    else:
        voltage = payload.get("voltage", DEFAULT_VOLTAGE)
        if (
            isinstance(voltage, bool)
            or not isinstance(voltage, int | float)
            or not 50 <= voltage <= 500
        ):
            raise ConfigError(f'"voltage" must be 50..500 V (phase to neutral), got {voltage!r}')
        watts = _three(payload, "power", "W", MAX_PLAUSIBLE_CURRENT * voltage)
        amps = [w / voltage for w in watts]
    at = _push_time(payload["at"], now, max_skew) if "at" in payload else now
    return Measurement(node_id, (amps[0], amps[1], amps[2]), at)
