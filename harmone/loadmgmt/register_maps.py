"""Where power meters keep their per-phase readings: Modbus register maps as frozen data.

A `RegisterMap` says which registers (holding or input) hold the L1/L2/L3 currents and, when
the meter has them, the L1/L2/L3 active powers, how the values are encoded (data type, word
order) and how to scale them to amps and watts. The built-in maps come from the vendors'
protocol documents (see docs/meters.md); `custom_register_map` builds one from configuration
data for any other meter. Decoding (`decode`) and turning raw values into per-phase currents
(`phase_currents`) are pure, so they are tested without a meter.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

from harmone.errors import ConfigError, RetryableError
from harmone.loadmgmt.model import DEFAULT_VOLTAGE, PhaseCurrents

__all__ = [
    "BUILTIN_MAPS",
    "CARLO_GAVAZZI_EM24",
    "EASTRON_SDM630",
    "MAX_PLAUSIBLE_CURRENT",
    "DataType",
    "MeterBadAnswer",
    "MeterError",
    "MeterNoAnswer",
    "PhaseRegisters",
    "RegisterMap",
    "RegisterType",
    "WordOrder",
    "custom_register_map",
    "decode",
    "phase_currents",
    "register_map_by_name",
]

#: Above this many amps per phase a reading is garbage, not load: no building connection that
#: shares current with EV chargers carries 10 kA, but a misread register easily "does".
MAX_PLAUSIBLE_CURRENT = 10_000.0


class MeterError(RetryableError):
    """A power meter did not answer, or answered something unusable (the next poll may work).

    Subclasses: `MeterNoAnswer` (no connection, timeout) and `MeterBadAnswer` (a Modbus
    exception response, a wrong register count, NaN/inf, an over-range or impossible value).
    The message is the reason in words, for people.
    """


class MeterNoAnswer(MeterError):
    """The meter could not be reached or did not answer in time."""


class MeterBadAnswer(MeterError):
    """The meter answered, but not with a usable reading."""


class RegisterType(StrEnum):
    HOLDING = "holding"  # function code 3
    INPUT = "input"  # function code 4


class DataType(StrEnum):
    FLOAT32 = "float32"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"

    @property
    def words(self) -> int:
        """Registers one value occupies."""
        return 1 if self in (DataType.INT16, DataType.UINT16) else 2


class WordOrder(StrEnum):
    """Order of the 16-bit registers of a 32-bit value (bytes in a register are always big)."""

    BIG = "big"  # high word first (Eastron)
    LITTLE = "little"  # low word first (Carlo Gavazzi)


_STRUCT = {
    DataType.FLOAT32: ">f",
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
}


def decode(words: Sequence[int], data_type: DataType, word_order: WordOrder) -> float:
    """The value held in `words` (one or two 16-bit registers, as read from the wire)."""
    if len(words) != data_type.words:
        raise ValueError(f"{data_type} needs {data_type.words} registers, got {len(words)}")
    ordered = list(words) if word_order is WordOrder.BIG else list(reversed(words))
    raw = b"".join(w.to_bytes(2, "big") for w in ordered)
    value: float = struct.unpack(_STRUCT[data_type], raw)[0]
    return value


@dataclass(frozen=True, slots=True)
class PhaseRegisters:
    """One quantity on three phases: the address of L1, L2, L3 and `scale` (value x scale)."""

    addresses: tuple[int, int, int]
    scale: float

    def __post_init__(self) -> None:
        addresses = tuple(self.addresses)
        if len(addresses) != 3:
            raise ConfigError(f"need 3 register addresses (L1, L2, L3), got {addresses!r}")
        for address in addresses:
            if isinstance(address, bool) or not isinstance(address, int):
                raise ConfigError(f"register address must be an integer, got {address!r}")
            if not 0 <= address <= 0xFFFF:
                raise ConfigError(f"register address {address} is outside 0..65535")
        object.__setattr__(self, "addresses", addresses)
        if (
            isinstance(self.scale, bool)
            or not isinstance(self.scale, int | float)
            or not math.isfinite(self.scale)
            or self.scale == 0
        ):
            raise ConfigError(f"scale must be a finite non-zero number, got {self.scale!r}")


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """How to read one meter family's per-phase load.

    `current` (scaled to A) is preferred; `power` (scaled to W) then only gives the current its
    direction, because meters report current as a magnitude and export (PV) would otherwise
    count as load. A map with `power` alone converts it to current at `voltage`. `overflow` is
    the raw value a meter reports when a quantity is over range (it is not a reading).
    """

    name: str
    title: str
    source: str
    register_type: RegisterType
    data_type: DataType
    word_order: WordOrder
    current: PhaseRegisters | None = None
    power: PhaseRegisters | None = None
    voltage: float = DEFAULT_VOLTAGE
    overflow: int | None = None

    def __post_init__(self) -> None:
        for field in ("name", "title"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"register map {field} must be a non-empty string")
        if self.current is None and self.power is None:
            raise ConfigError(f"register map {self.name!r} needs current or power registers")
        if (
            isinstance(self.voltage, bool)
            or not isinstance(self.voltage, int | float)
            or not 50 <= self.voltage <= 500
        ):
            raise ConfigError(f"register map voltage must be 50..500 V, got {self.voltage!r}")
        last = 0xFFFF - self.data_type.words + 1
        for regs in (self.current, self.power):
            if regs is not None and any(a > last for a in regs.addresses):
                raise ConfigError(f"register map {self.name!r} reads past register 65535")

    def blocks(self) -> tuple[tuple[int, int], ...]:
        """(start, count) of each contiguous run of registers to read, in address order.

        Values are read in runs rather than one by one (one round trip for a whole meter), but
        never across a gap: a meter may refuse registers it does not define.
        """
        width = self.data_type.words
        starts = sorted({a for regs in (self.current, self.power) if regs for a in regs.addresses})
        runs: list[list[int]] = []
        for start in starts:
            if runs and start <= runs[-1][0] + runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], start + width - runs[-1][0])
            else:
                runs.append([start, width])
        return tuple((start, count) for start, count in runs)


# --- built-in maps --------------------------------------------------------------------------------

#: Eastron SDM630 (Modbus and MCT variants): every value an IEEE 754 float, high word first, in
#: input registers (function code 4); current magnitude in A, active power signed in W.
EASTRON_SDM630 = RegisterMap(
    name="eastron_sdm630",
    title="SDM630",
    source="Eastron SDM630Modbus Smart Meter Modbus Protocol Implementation, section 1.2 "
    "(input registers 30007-30011 and 30013-30017)",
    register_type=RegisterType.INPUT,
    data_type=DataType.FLOAT32,
    word_order=WordOrder.BIG,
    current=PhaseRegisters((0x0006, 0x0008, 0x000A), 1.0),
    power=PhaseRegisters((0x000C, 0x000E, 0x0010), 1.0),
)

#: Carlo Gavazzi EM24-DIN and the EM300 series (EM330/EM340): INT32, low word first, readable
#: with function code 3 or 4; current in mA (Ampere*1000), active power in W*10.
CARLO_GAVAZZI_EM24 = RegisterMap(
    name="carlo_gavazzi_em24",
    title="EM24",
    source="Carlo Gavazzi EM24-DIN Communication Protocol (PFA, PFB & X models), table 2.3-1; "
    "EM300 Series and ET300 Series Communication Protocol (EM330/EM340)",
    register_type=RegisterType.HOLDING,
    data_type=DataType.INT32,
    word_order=WordOrder.LITTLE,
    current=PhaseRegisters((0x000C, 0x000E, 0x0010), 0.001),
    power=PhaseRegisters((0x0012, 0x0014, 0x0016), 0.1),
    overflow=0x7FFFFFFF,
)

BUILTIN_MAPS: Mapping[str, RegisterMap] = {m.name: m for m in (EASTRON_SDM630, CARLO_GAVAZZI_EM24)}

_CUSTOM_KEYS = frozenset(
    {"name", "register_type", "data_type", "word_order", "current", "power", "scale", "voltage"}
)


def register_map_by_name(name: str) -> RegisterMap:
    """A built-in map by name ("eastron_sdm630", "carlo_gavazzi_em24")."""
    try:
        return BUILTIN_MAPS[name]
    except (KeyError, TypeError):
        if name == "custom":
            raise ConfigError(
                'register map "custom" needs its registers: build it with custom_register_map()'
            ) from None
        known = ", ".join(sorted([*BUILTIN_MAPS, "custom"]))
        raise ConfigError(f"unknown register map {name!r}; known: {known}") from None


def _choice(enum: type[StrEnum], data: Mapping[str, object], key: str, default: str) -> str:
    value = data.get(key, default)
    allowed = [str(member) for member in enum]
    if value not in allowed:
        raise ConfigError(f"custom register map {key} must be one of {allowed}, got {value!r}")
    return str(value)


def custom_register_map(data: Mapping[str, object]) -> RegisterMap:
    """A map for any meter, from configuration data such as::

        {"register_type": "holding", "data_type": "int32", "word_order": "little",
         "current": [12, 14, 16], "scale": 0.001}

    Give `current` (addresses of L1, L2, L3; value x scale = A) or `power` (value x scale = W,
    converted at `voltage`, default 230 V). `data_type` is float32, int16, uint16, int32 or
    uint32; `word_order` "big" (high word first, the default) or "little".
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"custom register map must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _CUSTOM_KEYS)
    if unknown:
        raise ConfigError(f"custom register map has unknown keys {unknown}")
    if ("current" in data) == ("power" in data):
        raise ConfigError("custom register map needs exactly one of current or power")
    quantity = "current" if "current" in data else "power"
    addresses = data[quantity]
    if not isinstance(addresses, list | tuple):
        raise ConfigError(f"custom register map {quantity} must list 3 addresses (L1, L2, L3)")
    scale = data.get("scale", 1.0)
    voltage = data.get("voltage", DEFAULT_VOLTAGE)
    if "voltage" in data and quantity == "current":
        raise ConfigError("custom register map voltage only applies to a power map")
    # PhaseRegisters and RegisterMap check types and ranges; the casts only hand them over.
    regs = PhaseRegisters(cast(tuple[int, int, int], tuple(addresses)), cast(float, scale))
    return RegisterMap(
        name="custom",
        title=str(data.get("name") or "custom"),
        source="configuration",
        register_type=RegisterType(_choice(RegisterType, data, "register_type", "holding")),
        data_type=DataType(_choice(DataType, data, "data_type", "float32")),
        word_order=WordOrder(_choice(WordOrder, data, "word_order", "big")),
        current=regs if quantity == "current" else None,
        power=regs if quantity == "power" else None,
        voltage=cast(float, voltage),
    )


# --- from registers to amps -----------------------------------------------------------------------


def _phase_values(
    rmap: RegisterMap, regs: PhaseRegisters, words: Mapping[int, int], what: str
) -> list[float]:
    width = rmap.data_type.words
    values = []
    for phase, address in enumerate(regs.addresses, start=1):
        raw = decode([words[address + i] for i in range(width)], rmap.data_type, rmap.word_order)
        if not math.isfinite(raw):
            raise MeterBadAnswer(f"L{phase} {what} is {raw} (register 0x{address:04X})")
        if rmap.overflow is not None and raw == rmap.overflow:
            raise MeterBadAnswer(f"L{phase} {what} is over range (register 0x{address:04X})")
        values.append(raw * regs.scale)
    return values


def phase_currents(rmap: RegisterMap, words: Mapping[int, int]) -> PhaseCurrents:
    """Per-phase current in A from the registers read (`words`: address -> register value).

    Raises `MeterBadAnswer` for NaN/inf, over-range markers and impossible values: a negative
    current that the power does not explain as export, or more than `MAX_PLAUSIBLE_CURRENT`.
    Export comes back as a negative current.
    """
    power = _phase_values(rmap, rmap.power, words, "power") if rmap.power else None
    if rmap.current is None:
        assert power is not None  # RegisterMap guarantees one of the two
        amps = [watts / rmap.voltage for watts in power]
    else:
        amps = _phase_values(rmap, rmap.current, words, "current")
        for phase, value in enumerate(amps):
            exported = power is not None and power[phase] < 0
            if value < 0 and not exported:
                raise MeterBadAnswer(f"L{phase + 1} current is negative ({value:g} A)")
            # Magnitude from the current register, direction from the power register.
            amps[phase] = -abs(value) if exported else value
    for phase, value in enumerate(amps, start=1):
        if abs(value) > MAX_PLAUSIBLE_CURRENT:
            raise MeterBadAnswer(f"L{phase} current {value:g} A is not plausible")
    return (amps[0], amps[1], amps[2])
