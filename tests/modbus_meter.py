"""A power meter on 127.0.0.1 for tests: pymodbus' own Modbus TCP server holding one meter's
registers, and those registers encoded with pymodbus' own converter (an implementation
independent of HARMON-E's decoding). Used by the meter tests and by every test that runs load
management with a meter."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Literal

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

DT = AsyncModbusTcpClient.DATATYPE


def regs(value: float, data_type: Any, order: Literal["big", "little"] = "big") -> list[int]:
    return AsyncModbusTcpClient.convert_to_registers(value, data_type, word_order=order)


def sdm630_registers(currents: tuple[float, ...], powers: tuple[float, ...]) -> dict[int, int]:
    out: dict[int, int] = {}
    for i, (amps, watts) in enumerate(zip(currents, powers, strict=True)):
        for offset, word in enumerate(regs(amps, DT.FLOAT32)):
            out[0x0006 + 2 * i + offset] = word
        for offset, word in enumerate(regs(watts, DT.FLOAT32)):
            out[0x000C + 2 * i + offset] = word
    return out


def em24_registers(milliamps: tuple[int, ...], deciwatts: tuple[int, ...]) -> dict[int, int]:
    out: dict[int, int] = {}
    for i, (ma, dw) in enumerate(zip(milliamps, deciwatts, strict=True)):
        for offset, word in enumerate(regs(ma, DT.INT32, "little")):
            out[0x000C + 2 * i + offset] = word
        for offset, word in enumerate(regs(dw, DT.INT32, "little")):
            out[0x0012 + 2 * i + offset] = word
    return out


class MeterSim:
    """A pymodbus TCP server on 127.0.0.1 holding one meter's registers (unit id 1).

    `fail_with` makes it answer every read with that Modbus exception; `patch` overwrites
    registers on the next reads; `truncate` drops the last register of every answer.
    """

    def __init__(
        self, *, holding: dict[int, int] | None = None, inputs: dict[int, int] | None = None
    ) -> None:
        self.holding = dict(holding or {})
        self.inputs = dict(inputs or {})
        self.fail_with: ExcCodes | None = None
        self.patch: dict[int, int] = {}
        self.truncate = False
        self.port = 0
        self._server: ModbusTcpServer | None = None

    def _block(self, values: dict[int, int]) -> list[SimData]:
        size = max(values, default=0) + 8
        return [
            SimData(0, values=[values.get(a, 0) for a in range(size)], datatype=SimType.REGISTERS)
        ]

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self.fail_with is not None:
            return self.fail_with
        for reg, value in self.patch.items():
            if 0 <= reg - start_address < len(registers):
                registers[reg - start_address] = value
        return None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending and self.truncate and pdu.registers:
            pdu.registers = list(pdu.registers)[:-1]
        return pdu

    async def start(self) -> None:
        bits = [SimData(0, values=False, datatype=SimType.BITS)]
        device = SimDevice(
            id=1,
            simdata=(bits, list(bits), self._block(self.holding), self._block(self.inputs)),
            action=self._action,
        )
        server = ModbusTcpServer(
            device, address=("127.0.0.1", self.port), trace_pdu=self._trace_pdu
        )
        await server.serve_forever(background=True)
        self._server = server
        self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]
            await asyncio.sleep(0.01)  # let the closed connections finish


@contextlib.asynccontextmanager
async def meter_sim(**kwargs: dict[int, int]) -> AsyncIterator[MeterSim]:
    sim = MeterSim(**kwargs)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()
