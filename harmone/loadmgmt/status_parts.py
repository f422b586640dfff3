"""The load-management status as values (`LoadManagementService.status`), and small pure helpers
to build it."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from harmone.loadmgmt.config import SiteLoadConfig
from harmone.loadmgmt.meters import MeterStatus
from harmone.loadmgmt.model import Node

__all__ = [
    "ChargerStatus",
    "ConnectorStatus",
    "LimitOrigin",
    "NodeStatus",
    "SiteLoadStatus",
    "node_paths",
    "timing_summary",
]


def timing_summary(values: list[float]) -> dict[str, float | int | None]:
    ordered = sorted(values)
    return {
        "count": len(values),
        "p50": statistics.median(values) if values else None,
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if values else None,
        "max": max(values) if values else None,
    }


def node_paths(config: SiteLoadConfig) -> dict[str, tuple[str, ...]]:
    """Node id -> the node ids from the root down to it."""
    out: dict[str, tuple[str, ...]] = {}
    stack: list[tuple[Node, tuple[str, ...]]] = [(config.tree, ())]
    while stack:
        node, above = stack.pop()
        here = (*above, node.id)
        out[node.id] = here
        stack.extend((c, here) for c in node.children if isinstance(c, Node))
    return out


@dataclass(frozen=True, slots=True)
class NodeStatus:
    id: str
    limit: float
    limit_source: str
    meter: str
    load: tuple[float, float, float]
    charger_load: tuple[float, float, float]
    non_charger_load: tuple[float, float, float]
    headroom: tuple[float, float, float]
    imbalance: float


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
    """One connector: its grant, what the charger applies, what it draws, and why."""

    charger_id: str
    connector_id: int
    charging: bool
    reserved: bool
    granted: float
    per_phase: tuple[float, float, float]
    need: float
    reasons: tuple[str, ...]
    #: policy, node_limit, suspended, paused_below_min, car_max, capped_by_cpms, car_draw,
    #: flagged, meter_failed, ...
    reason_kinds: tuple[str, ...]
    limit_in_force: float | None
    exposure: float
    measured: tuple[float, ...] | None
    held: str | None


@dataclass(frozen=True, slots=True)
class ChargerStatus:
    connected: bool
    flagged: str | None
    flagged_at: datetime | None
    stack_level: int
    tx_default_sent: float | None
    cpms_caps: dict[str, float | None]
    transactions: dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class LimitOrigin:
    """Who set a node's dynamic limit, and when (kept in memory: unknown after a restart)."""

    by: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class SiteLoadStatus:
    enabled: bool
    policy: str
    at: datetime | None
    nodes: tuple[NodeStatus, ...]
    connectors: tuple[ConnectorStatus, ...]
    chargers: dict[str, ChargerStatus]
    dynamic_limits: dict[str, float]
    meters: dict[str, MeterStatus]
    reaction_time_s: dict[str, float | int | None]
    decrease_time_s: dict[str, float | int | None] = field(default_factory=dict)
    #: who set each dynamic limit in force, when known
    dynamic_limit_origins: dict[str, LimitOrigin] = field(default_factory=dict)
