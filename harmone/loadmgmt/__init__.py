"""Load management: share each site's grid connection between its chargers.

The core is pure: `allocate` turns a site tree, what is charging, meter readings and the time
into an `Allocation`, with no I/O and no hidden state. Enforcing it (SetChargingProfile through
the relay) is a separate layer.
"""

from __future__ import annotations

from harmone.loadmgmt.allocate import allocate
from harmone.loadmgmt.model import (
    DEFAULT_OPTIONS,
    DEFAULT_VOLTAGE,
    Allocation,
    AllocationOptions,
    ChargerSpec,
    ConnectorGrant,
    Demand,
    Limitation,
    LimitKind,
    LimitSource,
    Measurement,
    MeterState,
    Node,
    NodeLoad,
    Phase,
    PhaseCurrents,
    Policy,
    Wiring,
    amps_to_watts,
    watts_to_amps,
)

__all__ = [
    "DEFAULT_OPTIONS",
    "DEFAULT_VOLTAGE",
    "Allocation",
    "AllocationOptions",
    "ChargerSpec",
    "ConnectorGrant",
    "Demand",
    "LimitKind",
    "LimitSource",
    "Limitation",
    "Measurement",
    "MeterState",
    "Node",
    "NodeLoad",
    "Phase",
    "PhaseCurrents",
    "Policy",
    "Wiring",
    "allocate",
    "amps_to_watts",
    "watts_to_amps",
]
