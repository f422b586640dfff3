"""Power meter readers against a real Modbus TCP server (pymodbus') on 127.0.0.1.

Register values are encoded with pymodbus' own converter, so the reader's decoding is checked
against an independent implementation. The poller runs on a manual clock: each test moves the
time and polls happen exactly then. Timeouts of single reads are real (tenths of a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from modbus_meter import DT, MeterSim, em24_registers, meter_sim, regs, sdm630_registers
from pymodbus.constants import ExcCodes
from support import PATIENCE, FixedClock, free_port

from harmone.errors import ConfigError, HarmoneError, RetryableError
from harmone.loadmgmt.meters import (
    MeterBadAnswer,
    MeterConfig,
    MeterError,
    MeterHealth,
    MeterNoAnswer,
    MeterPoller,
    ModbusMeterReader,
    measurement_from_push,
)
from harmone.loadmgmt.model import Measurement
from harmone.loadmgmt.register_maps import (
    CARLO_GAVAZZI_EM24,
    EASTRON_SDM630,
    DataType,
    RegisterType,
    WordOrder,
    custom_register_map,
    decode,
    phase_currents,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def config(sim: MeterSim, **kwargs: Any) -> MeterConfig:
    defaults: dict[str, Any] = {"timeout": 0.3, "poll_interval": 0.05, "max_age": 30.0}
    return MeterConfig(node_id="main", host="127.0.0.1", port=sim.port, **(defaults | kwargs))


async def read(cfg: MeterConfig) -> Measurement:
    reader = ModbusMeterReader(cfg, FixedClock(NOW))
    try:
        return await reader.read_once()
    finally:
        await reader.aclose()


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts requests and never answers them."""

    def __init__(self) -> None:
        self.port = 0
        self.received = 0  # connections that sent a request
        self._changed = asyncio.Event()

    async def requests(self, count: int) -> None:
        """Wait until `count` connections have sent something."""
        async with asyncio.timeout(PATIENCE):
            while self.received < count:
                self._changed.clear()
                await self._changed.wait()

    def seen(self) -> None:
        self.received += 1
        self._changed.set()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[SilentServer]:
    """A `SilentServer` while the block runs."""
    silent = SilentServer()
    handlers: set[asyncio.Task[Any]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            if await reader.read(1):
                silent.seen()
                await reader.read()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    silent.port = server.sockets[0].getsockname()[1]
    try:
        yield silent
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        for writer in writers:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


# --- reading the built-in and custom maps ---------------------------------------------------------


async def test_sdm630_reads_phase_currents_from_input_registers() -> None:
    inputs = sdm630_registers((12.5, 7.25, 0.0), (2875.0, 1667.5, 0.0))
    async with meter_sim(inputs=inputs) as sim:
        m = await read(config(sim, register_map="eastron_sdm630"))
    assert m == Measurement("main", (12.5, 7.25, 0.0), NOW)


async def test_sdm630_export_gives_a_negative_current() -> None:
    # The current register is a magnitude; the power register says L2 exports (PV).
    inputs = sdm630_registers((10.0, 4.0, 1.0), (2300.0, -920.0, 230.0))
    async with meter_sim(inputs=inputs) as sim:
        m = await read(config(sim))
    assert m.load == (10.0, -4.0, 1.0)


async def test_em24_reads_int32_low_word_first_in_milliamps() -> None:
    # 70.123 A does not fit one register: a wrong word order would read nonsense.
    holding = em24_registers((70_123, 16_000, 500), (161_283, 36_800, -1_150))
    async with meter_sim(holding=holding) as sim:
        m = await read(config(sim, register_map="carlo_gavazzi_em24"))
    assert m.load == pytest.approx((70.123, 16.0, -0.5))


async def test_custom_map_with_scattered_uint16_holding_registers() -> None:
    holding = {100: 123, 105: 4567, 110: 0}  # deciamps, with gaps the meter does not define
    rmap = custom_register_map(
        {"data_type": "uint16", "current": [100, 105, 110], "scale": 0.1, "name": "Acme M3"}
    )
    async with meter_sim(holding=holding) as sim:
        cfg = config(sim, register_map=rmap)
        m = await read(cfg)
    assert m.load == pytest.approx((12.3, 456.7, 0.0))
    assert cfg.label == f"127.0.0.1:{sim.port} unit 1 (Acme M3)"


async def test_custom_power_map_float32_low_word_first_in_input_registers() -> None:
    inputs: dict[int, int] = {}
    for i, watts in enumerate((4600.0, -2300.0, 0.0)):
        for offset, word in enumerate(regs(watts, DT.FLOAT32, "little")):
            inputs[0x20 + 2 * i + offset] = word
    rmap = custom_register_map(
        {
            "register_type": "input",
            "data_type": "float32",
            "word_order": "little",
            "power": [0x20, 0x22, 0x24],
            "voltage": 230,
        }
    )
    async with meter_sim(inputs=inputs) as sim:
        m = await read(config(sim, register_map=rmap))
    assert m.load == pytest.approx((20.0, -10.0, 0.0))


# --- errors ---------------------------------------------------------------------------------------


async def test_exception_response_is_a_bad_answer() -> None:
    async with meter_sim(inputs=sdm630_registers((1, 1, 1), (1, 1, 1))) as sim:
        sim.fail_with = ExcCodes.DEVICE_FAILURE
        with pytest.raises(MeterBadAnswer, match=r"Modbus exception 4 \(device failure\)"):
            await read(config(sim))


async def test_registers_the_meter_does_not_have_are_a_bad_answer() -> None:
    async with meter_sim(holding={0: 0}) as sim:
        with pytest.raises(MeterBadAnswer, match=r"illegal data address.*0x000C\.\.0x0017"):
            await read(config(sim, register_map="carlo_gavazzi_em24"))


def _sdm(amps: tuple[float, ...], watts: tuple[float, ...]) -> dict[int, int]:
    return sdm630_registers(amps, watts)


@pytest.mark.parametrize(
    ("name", "patch", "message"),
    [
        ("nan", _sdm((math.nan, 1, 1), (1, 1, 1)), "L1 current is nan"),
        ("inf", _sdm((1, 1, 1), (1, math.inf, 1)), "L2 power is inf"),
        ("negative", _sdm((1, 1, -3), (1, 1, 200)), r"L3 current is negative \(-3 A\)"),
        ("huge", _sdm((1, 2e6, 1), (1, 1, 1)), "L2 current 2e\\+06 A is not plausible"),
    ],
)
async def test_garbage_values_are_a_bad_answer(
    name: str, patch: dict[int, int], message: str
) -> None:
    async with meter_sim(inputs=sdm630_registers((1, 1, 1), (1, 1, 1))) as sim:
        sim.patch = patch
        with pytest.raises(MeterBadAnswer, match=message):
            await read(config(sim))


async def test_em24_over_range_marker_is_a_bad_answer() -> None:
    holding = em24_registers((0x7FFFFFFF, 1000, 1000), (10, 10, 10))
    async with meter_sim(holding=holding) as sim:
        with pytest.raises(MeterBadAnswer, match="L1 current is over range"):
            await read(config(sim, register_map="carlo_gavazzi_em24"))


async def test_wrong_register_count_is_a_bad_answer() -> None:
    async with meter_sim(inputs=sdm630_registers((1, 1, 1), (1, 1, 1))) as sim:
        sim.truncate = True
        with pytest.raises(MeterBadAnswer, match="11 registers instead of 12"):
            await read(config(sim))


async def test_connection_refused_says_so() -> None:
    cfg = MeterConfig("main", "127.0.0.1", port=free_port(), timeout=0.3)
    with pytest.raises(MeterNoAnswer, match=r"^connection refused$"):
        await read(cfg)


async def test_a_meter_that_never_answers_times_out() -> None:
    # How long the read takes beyond its timeout is measured in bench/deadlines_bench.py.
    async with silent_server() as server:
        cfg = MeterConfig("main", "127.0.0.1", port=server.port, timeout=0.2)
        with pytest.raises(MeterNoAnswer, match=r"no answer within 0\.2 s"):
            await read(cfg)
        assert server.received == 1  # connected and asked: it is the answer that never came


async def test_reader_reconnects_after_the_meter_restarts() -> None:
    sim = MeterSim(inputs=sdm630_registers((5, 5, 5), (1, 1, 1)))
    await sim.start()
    reader = ModbusMeterReader(config(sim), FixedClock(NOW))
    try:
        assert (await reader.read_once()).load == (5, 5, 5)
        await sim.stop()
        with pytest.raises(MeterNoAnswer):
            await reader.read_once()
        await sim.start()  # same port
        assert (await reader.read_once()).load == (5, 5, 5)
    finally:
        await reader.aclose()
        await sim.stop()


def test_meter_errors_are_retryable_harmone_errors() -> None:
    assert issubclass(MeterNoAnswer, MeterError)
    assert issubclass(MeterBadAnswer, MeterError)
    assert issubclass(MeterError, RetryableError)
    assert issubclass(MeterError, HarmoneError)


# --- the poller -----------------------------------------------------------------------------------


class ManualClock:
    """Time for a `MeterPoller` that moves only when the test moves it.

    `monotonic` and `now` start at 0 and NOW; `sleep` (the poller's) returns once `advance`
    has moved the time past its end, so each poll happens exactly when the test says. (Not
    `harmone.clock.ManualClock`, which lets woken tasks run for a number of event-loop turns: a
    poller reads a real Modbus server between its sleeps, so `advance` waits until it sleeps
    again.)
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._changed = asyncio.Event()

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return NOW + timedelta(seconds=self.seconds)

    async def sleep(self, seconds: float) -> None:
        entry = (self.seconds + seconds, asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        self._changed.set()
        try:
            await entry[1]
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    async def sleeping(self, count: int) -> None:
        """Wait until `count` pollers sleep (each has finished its poll)."""
        async with asyncio.timeout(PATIENCE):
            while len(self._sleepers) < count:
                self._changed.clear()
                await self._changed.wait()

    async def advance(self, seconds: float, sleepers: int = 1) -> None:
        """Move the time on, and wait until the `sleepers` pollers have polled and sleep again."""
        self.seconds += seconds
        for entry in list(self._sleepers):
            if entry[0] <= self.seconds:
                self._sleepers.remove(entry)
                entry[1].set_result(None)
        await self.sleeping(sleepers)


class Collector:
    def __init__(self) -> None:
        self.items: list[Measurement] = []

    def __call__(self, m: Measurement) -> None:
        self.items.append(m)


def _other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_poller_fails_after_n_polls_then_recovers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="harmone.loadmgmt.meters")
    sim = MeterSim(inputs=sdm630_registers((8, 9, 10), (1, 1, 1)))
    await sim.start()
    got = Collector()
    failures_when_delivered: list[int] = []

    def record(m: Measurement) -> None:
        failures_when_delivered.append(poller.status()["main"].consecutive_failures)
        got(m)

    clock = ManualClock()
    cfg = config(sim, poll_interval=5.0, max_age=60.0, failures_before_failed=3)
    poller = MeterPoller([cfg], record, clock=clock, sleep=clock.sleep)
    assert poller.status()["main"].health is MeterHealth.STARTING
    poller.start()
    try:
        await clock.sleeping(1)  # the first poll, at 0 s
        assert got.items == [Measurement("main", (8, 9, 10), NOW)]
        assert poller.status()["main"].health is MeterHealth.OK

        await sim.stop()
        # Nothing is delivered for the first two failures; from the third on, every poll.
        for _ in range(2):
            await clock.advance(5.0)
            assert len(got.items) == 1
            assert poller.status()["main"].health is MeterHealth.OK
        await clock.advance(5.0)  # 15 s: the third failure in a row
        assert got.items[1:] == [Measurement("main", (0, 0, 0), clock.now(), failed=True)]
        await clock.advance(5.0)
        assert got.items[2:] == [Measurement("main", (0, 0, 0), clock.now(), failed=True)]
        assert failures_when_delivered == [0, 3, 4]
        status = poller.status()["main"]
        assert status.health is MeterHealth.FAILED
        assert status.last_error == "connection refused"
        assert status.consecutive_failures == 4
        assert status.last_success == NOW
        assert status.last_reading == Measurement("main", (8, 9, 10), NOW)  # last good one

        await sim.start()
        await clock.advance(5.0)
        assert got.items[3:] == [Measurement("main", (8, 9, 10), clock.now())]
        assert poller.status()["main"].health is MeterHealth.OK
        assert poller.status()["main"].last_error is None
        assert poller.status()["main"].last_success == clock.now()
    finally:
        await poller.stop()
        await sim.stop()
    assert not _other_tasks()

    ours = [r for r in caplog.records if r.name == "harmone.loadmgmt.meters"]
    warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert warnings == [
        f"meter 127.0.0.1:{sim.port} unit 1 (SDM630) did not answer for 15 s: "
        "connection refused; node main falls to its safety current"
    ]
    recoveries = [r for r in ours if "answers again after 4 failed polls" in r.getMessage()]
    assert len(recoveries) == 1


async def test_poller_fails_a_meter_whose_reading_is_too_old() -> None:
    got = Collector()
    clock = ManualClock()
    # Many failures allowed, but no good reading for max_age also fails it.
    cfg = MeterConfig(
        "main",
        "127.0.0.1",
        port=free_port(),
        poll_interval=5.0,
        timeout=0.2,
        failures_before_failed=1000,
        max_age=20.0,
    )
    poller = MeterPoller([cfg], got, clock=clock, sleep=clock.sleep)
    poller.start()
    try:
        await clock.sleeping(1)
        for _ in range(3):  # 0 s, 5 s, 10 s, 15 s: failed polls, still younger than max_age
            assert got.items == []
            await clock.advance(5.0)
        assert got.items == []
        assert poller.status()["main"].consecutive_failures == 4
        await clock.advance(5.0)  # 20 s without a reading
        assert got.items == [Measurement("main", (0, 0, 0), clock.now(), failed=True)]
        assert poller.status()["main"].health is MeterHealth.FAILED
    finally:
        await poller.stop()


async def test_poller_polls_many_meters_concurrently() -> None:
    async with (
        meter_sim(inputs=sdm630_registers((1, 2, 3), (1, 1, 1))) as a,
        meter_sim(holding=em24_registers((4000, 5000, 6000), (1, 1, 1))) as b,
    ):
        got = Collector()
        clock = ManualClock()
        poller = MeterPoller(
            [
                MeterConfig("a", "127.0.0.1", port=a.port, poll_interval=1.0, timeout=0.3),
                MeterConfig(
                    "b", "127.0.0.1", b.port, register_map="carlo_gavazzi_em24", timeout=0.3
                ),
            ],
            got,
            clock=clock,
            sleep=clock.sleep,
        )
        poller.start()
        try:
            await clock.sleeping(2)
            assert sorted(m.node_id for m in got.items) == ["a", "b"]
            # "a" polls every second, "b" every 5 s (its default), each on its own schedule
            for _ in range(4):
                await clock.advance(1.0, sleepers=2)
            assert [m.node_id for m in got.items].count("a") == 5
            assert [m.node_id for m in got.items].count("b") == 1
            await clock.advance(1.0, sleepers=2)  # 5 s: both
            assert [m.node_id for m in got.items].count("a") == 6
            assert [m.node_id for m in got.items].count("b") == 2
        finally:
            await poller.stop()
    by_node = {m.node_id: m.load for m in got.items}
    assert by_node == {"a": (1, 2, 3), "b": pytest.approx((4, 5, 6))}
    assert set(poller.status()) == {"a", "b"}


async def test_poller_survives_a_failing_async_callback(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def broken(m: Measurement) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("consumer bug")

    clock = ManualClock()
    async with meter_sim(inputs=sdm630_registers((1, 1, 1), (1, 1, 1))) as sim:
        poller = MeterPoller(
            [config(sim, poll_interval=5.0)], broken, clock=clock, sleep=clock.sleep
        )
        poller.start()
        try:
            await clock.sleeping(1)
            for _ in range(2):
                await clock.advance(5.0)
            assert calls == 3  # every poll still delivered after the callback raised
            assert poller.status()["main"].health is MeterHealth.OK
        finally:
            await poller.stop()
    assert caplog.text.count("on_measurement failed for node main") == 3


async def test_poller_stop_is_bounded_while_reads_hang() -> None:
    async with silent_server() as server:
        # Reads that would wait an hour for their answer: stop() must not wait for them.
        poller = MeterPoller(
            [MeterConfig(f"n{i}", "127.0.0.1", port=server.port, timeout=3600.0) for i in range(3)],
            lambda m: None,
        )
        poller.start()
        await server.requests(3)  # every reader is now waiting for an answer
        async with asyncio.timeout(PATIENCE):  # a guard against hanging, not a speed claim
            await poller.stop()
        assert all(s.health is MeterHealth.STARTING for s in poller.status().values())
    assert not _other_tasks()


def test_poller_refuses_two_meters_on_one_node() -> None:
    cfg = MeterConfig("main", "127.0.0.1")
    with pytest.raises(ConfigError, match="more than one meter"):
        MeterPoller([cfg, cfg], lambda m: None)


# --- configuration --------------------------------------------------------------------------------


def test_meter_config_defaults() -> None:
    cfg = MeterConfig("main", "192.0.2.10")
    assert (cfg.port, cfg.unit_id, cfg.poll_interval, cfg.timeout) == (502, 1, 5.0, 2.0)
    assert (cfg.failures_before_failed, cfg.max_age) == (3, 60.0)
    assert cfg.map is EASTRON_SDM630
    assert cfg.label == "192.0.2.10:502 unit 1 (SDM630)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"node_id": ""}, "node_id must be a non-empty string"),
        ({"host": ""}, "host must be a non-empty string"),
        ({"port": 0}, "port must be an integer 1..65535"),
        ({"port": "502"}, "port must be an integer"),
        ({"unit_id": 256}, "unit id must be an integer 0..255"),
        ({"unit_id": True}, "unit id must be an integer"),
        ({"register_map": "sdm"}, "unknown register map 'sdm'"),
        ({"register_map": "custom"}, "custom_register_map"),
        ({"register_map": 3}, "register_map must be a name or a RegisterMap"),
        ({"poll_interval": 0}, "poll_interval must be more than 0 s"),
        ({"timeout": math.nan}, "timeout must be a number of seconds"),
        ({"failures_before_failed": 0}, "failures_before_failed must be an integer 1..1000"),
        ({"max_age": 1.0}, "max_age must be at least its poll_interval"),
    ],
)
def test_meter_config_rejects(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"node_id": "main", "host": "192.0.2.10"} | kwargs
    with pytest.raises(ConfigError, match=message):
        MeterConfig(**args)


def test_meter_config_from_dict_with_custom_map() -> None:
    cfg = MeterConfig.from_dict(
        {
            "node_id": "hall",
            "host": "192.0.2.11",
            "unit_id": 3,
            "register_map": "custom",
            "custom": {"data_type": "int16", "current": [1, 2, 3], "scale": 0.01},
        }
    )
    assert cfg.map.current is not None and cfg.map.current.addresses == (1, 2, 3)
    assert cfg.map.register_type is RegisterType.HOLDING
    assert MeterConfig.from_dict({"node_id": "a", "host": "h"}).map is EASTRON_SDM630
    with pytest.raises(ConfigError, match="unexpected keyword argument 'colour'"):
        MeterConfig.from_dict({"node_id": "a", "host": "h", "colour": "red"})
    with pytest.raises(ConfigError, match='needs a "custom" mapping'):
        MeterConfig.from_dict({"node_id": "a", "host": "h", "register_map": "custom"})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"current": [1, 2, 3], "power": [4, 5, 6]}, "exactly one of current or power"),
        ({}, "exactly one of current or power"),
        ({"current": [1, 2]}, "need 3 register addresses"),
        ({"current": "1,2,3"}, "must list 3 addresses"),
        ({"current": [1, 2, 70000]}, "outside 0..65535"),
        ({"current": [1, 2, 3.5]}, "must be an integer"),
        ({"current": [1, 2, 3], "scale": 0}, "finite non-zero"),
        ({"current": [1, 2, 3], "data_type": "int64"}, "data_type must be one of"),
        ({"current": [1, 2, 3], "word_order": "middle"}, "word_order must be one of"),
        ({"current": [1, 2, 3], "register_type": "coil"}, "register_type must be one of"),
        ({"current": [1, 2, 3], "voltage": 230}, "voltage only applies to a power map"),
        ({"power": [1, 2, 3], "voltage": 5}, "voltage must be 50..500 V"),
        ({"current": [1, 2, 0xFFFF]}, "reads past register 65535"),
        ({"current": [1, 2, 3], "unit": "A"}, "unknown keys"),
    ],
)
def test_custom_register_map_rejects(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        custom_register_map(data)


# --- pure decoding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "data_type", "order", "value"),
    [
        ([0x4148, 0x0000], DataType.FLOAT32, WordOrder.BIG, 12.5),
        ([0x0000, 0x4148], DataType.FLOAT32, WordOrder.LITTLE, 12.5),
        ([0x1200, 0x0001], DataType.INT32, WordOrder.LITTLE, 0x11200),
        ([0xFFFF, 0xFFFE], DataType.INT32, WordOrder.BIG, -2),
        ([0xFFFF, 0xFFFE], DataType.UINT32, WordOrder.BIG, 0xFFFFFFFE),
        ([0xFFFF], DataType.INT16, WordOrder.BIG, -1),
        ([0xFFFF], DataType.UINT16, WordOrder.LITTLE, 0xFFFF),
    ],
)
def test_decode(words: list[int], data_type: DataType, order: WordOrder, value: float) -> None:
    assert decode(words, data_type, order) == value


def test_builtin_maps_read_one_block_each() -> None:
    assert EASTRON_SDM630.blocks() == ((0x0006, 12),)
    assert CARLO_GAVAZZI_EM24.blocks() == ((0x000C, 12),)
    gapped = custom_register_map({"data_type": "uint16", "current": [10, 11, 20]})
    assert gapped.blocks() == ((10, 2), (20, 1))


def test_phase_currents_direction_follows_power() -> None:
    words = sdm630_registers((3.0, 3.0, 3.0), (-10.0, 0.0, 10.0))
    assert phase_currents(EASTRON_SDM630, words) == (-3.0, 3.0, 3.0)
    # A meter that signs its currents itself agrees with its power: still export.
    words = sdm630_registers((-3.0, 3.0, 3.0), (-10.0, 0.0, 10.0))
    assert phase_currents(EASTRON_SDM630, words) == (-3.0, 3.0, 3.0)


# --- pushed readings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "load", "at"),
    [
        ({"current": [10, 12.5, 0]}, (10.0, 12.5, 0.0), NOW),
        ({"current": [-3, 0, 0]}, (-3.0, 0.0, 0.0), NOW),
        ({"power": [2300, 4600, 0], "voltage": 230}, (10.0, 20.0, 0.0), NOW),
        ({"power": [2300, 0, -2300]}, (10.0, 0.0, -10.0), NOW),
        ({"power": [1200, 0, 0], "voltage": 120}, (10.0, 0.0, 0.0), NOW),
        (
            {"current": [1, 2, 3], "at": "2025-06-01T11:59:30Z"},
            (1.0, 2.0, 3.0),
            NOW - timedelta(seconds=30),
        ),
        (
            {"current": [1, 2, 3], "at": "2025-06-01T14:00:03+02:00"},
            (1.0, 2.0, 3.0),
            NOW + timedelta(seconds=3),
        ),
    ],
)
def test_push_accepts(payload: dict[str, Any], load: tuple[float, ...], at: datetime) -> None:
    m = measurement_from_push("main", payload, NOW)
    assert m.node_id == "main" and not m.failed
    assert m.load == pytest.approx(load)
    assert m.at == at


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2, 3], "must be a JSON object"),
        ({}, 'exactly one of "current" or "power"'),
        ({"current": [1, 2, 3], "power": [1, 2, 3]}, 'exactly one of "current" or "power"'),
        ({"current": [1, 2]}, '"current" must be a list of 3 numbers'),
        ({"current": "1,2,3"}, '"current" must be a list of 3 numbers'),
        ({"current": [1, None, 3]}, '"current" L2 must be a number'),
        ({"current": [1, 2, True]}, '"current" L3 must be a number'),
        ({"current": [math.nan, 2, 3]}, '"current" L1 must be within'),
        ({"current": [1, 2e6, 3]}, '"current" L2 must be within'),
        ({"current": [1, 2, 3], "voltage": 230}, '"voltage" only goes with "power"'),
        ({"power": [1, 2, 3], "voltage": 0}, '"voltage" must be 50..500 V'),
        ({"power": [1, 2, 3], "voltage": "230"}, '"voltage" must be 50..500 V'),
        ({"power": [1, 2, 1e12]}, '"power" L3 must be within'),
        ({"current": [1, 2, 3], "at": "yesterday"}, '"at" must be an ISO 8601 time'),
        ({"current": [1, 2, 3], "at": "2025-06-01T12:00:00"}, "with a UTC offset"),
        ({"current": [1, 2, 3], "at": 1717243200}, '"at" must be an ISO 8601 time'),
        ({"current": [1, 2, 3], "at": "2025-06-01T12:00:10Z"}, "is in the future"),
        ({"current": [1, 2, 3], "failed": True}, r"unknown fields \['failed'\]"),
    ],
)
def test_push_rejects(payload: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        measurement_from_push("main", payload, NOW)


def test_push_future_tolerance_is_configurable() -> None:
    payload = {"current": [1, 2, 3], "at": "2025-06-01T12:00:10Z"}
    m = measurement_from_push("main", payload, NOW, max_skew=timedelta(seconds=15))
    assert m.at == NOW + timedelta(seconds=10)


def test_push_needs_an_aware_now() -> None:
    with pytest.raises(ConfigError, match="timezone-aware"):
        measurement_from_push("main", {"current": [1, 2, 3]}, datetime(2025, 6, 1, 12))


async def test_meter_that_drops_the_connection_is_no_answer() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(MeterNoAnswer):
            await read(MeterConfig("main", "127.0.0.1", port=port, timeout=0.2))
    finally:
        server.close()
        await server.wait_closed()
