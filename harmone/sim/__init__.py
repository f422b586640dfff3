"""Simulated chargers and a simulated CPMS, shared by the CLI, the tests and the benchmarks."""

from __future__ import annotations

from harmone.sim.charger import (
    MODEL,
    VENDOR,
    ConnectorState,
    InstalledProfile,
    OcppVersion,
    SimulatedCharger,
)
from harmone.sim.cpms import DEFAULT_SUBPROTOCOLS, Handshake, MessageListener, SimulatedCpms

__all__ = [
    "DEFAULT_SUBPROTOCOLS",
    "MODEL",
    "VENDOR",
    "ConnectorState",
    "Handshake",
    "InstalledProfile",
    "MessageListener",
    "OcppVersion",
    "SimulatedCharger",
    "SimulatedCpms",
]
