"""A site's load-management status read back from its JSON (what a gateway box reports up to
its cloud, `status_json` of the REST API), so that the cloud shows a gateway site's status
with the same views as its own. Pure; unknown or missing fields get neutral values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from harmone.loadmgmt.controller import Sample
from harmone.loadmgmt.meters import MeterHealth, MeterStatus
from harmone.loadmgmt.model import Measurement
from harmone.loadmgmt.service import ChargerStatus, ConnectorStatus, NodeStatus, SiteLoadStatus

__all__ = ["parse_time", "sample_from_json", "status_from_json"]


def parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _f(value: object, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) else default


def _opt(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _phases(value: object) -> tuple[float, float, float]:
    v = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []
    v = [*v, 0.0, 0.0, 0.0][:3]
    return (_f(v[0]), _f(v[1]), _f(v[2]))


def _strs(value: object) -> tuple[str, ...]:
    return tuple(str(x) for x in value) if isinstance(value, list | tuple) else ()


def _node(d: Mapping[str, Any]) -> NodeStatus:
    return NodeStatus(
        id=str(d.get("id")),
        limit=_f(d.get("limit")),
        limit_source=str(d.get("limit_source") or "configured"),
        meter=str(d.get("meter") or ""),
        load=_phases(d.get("load")),
        charger_load=_phases(d.get("charger_load")),
        non_charger_load=_phases(d.get("non_charger_load")),
        headroom=_phases(d.get("headroom")),
        imbalance=_f(d.get("imbalance")),
    )


def _connector(d: Mapping[str, Any]) -> ConnectorStatus:
    measured = d.get("measured")
    held = d.get("held")
    return ConnectorStatus(
        charger_id=str(d.get("charger_id")),
        connector_id=int(_f(d.get("connector_id"))),
        charging=bool(d.get("charging")),
        reserved=bool(d.get("reserved")),
        granted=_f(d.get("granted")),
        per_phase=_phases(d.get("per_phase")),
        need=_f(d.get("need")),
        reasons=_strs(d.get("reasons")),
        reason_kinds=_strs(d.get("reason_kinds")),
        limit_in_force=_opt(d.get("limit_in_force")),
        exposure=_f(d.get("exposure")),
        measured=tuple(_f(x) for x in measured) if isinstance(measured, list) else None,
        held=str(held) if held is not None else None,
    )


def _charger(d: Mapping[str, Any]) -> ChargerStatus:
    caps = d.get("cpms_caps")
    flagged = d.get("flagged")
    return ChargerStatus(
        connected=bool(d.get("connected")),
        flagged=str(flagged) if flagged else None,
        flagged_at=parse_time(d.get("flagged_at")),
        stack_level=int(_f(d.get("stack_level"))),
        tx_default_sent=_opt(d.get("tx_default_sent")),
        cpms_caps={str(k): _opt(v) for k, v in caps.items()} if isinstance(caps, dict) else {},
        transactions=dict(d.get("transactions") or {}),
    )


def _meter(node_id: str, d: Mapping[str, Any]) -> MeterStatus:
    try:
        health = MeterHealth(str(d.get("health")))
    except ValueError:
        health = MeterHealth.STARTING
    success = parse_time(d.get("last_success"))
    reading = d.get("last_reading")
    last = None
    if isinstance(reading, list) and len(reading) == 3 and success is not None:
        last = Measurement(node_id, _phases(reading), success)
    return MeterStatus(
        node_id=node_id,
        meter=str(d.get("meter") or ""),
        health=health,
        last_reading=last,
        last_error=d.get("last_error") if isinstance(d.get("last_error"), str) else None,
        last_success=success,
        consecutive_failures=0,
    )


def status_from_json(data: Mapping[str, Any]) -> SiteLoadStatus:
    """The status as `status_json` wrote it (datetimes as ISO 8601 strings)."""
    chargers = data.get("chargers") or {}
    meters = data.get("meters") or {}
    limits = data.get("dynamic_limits") or {}
    return SiteLoadStatus(
        enabled=bool(data.get("enabled", True)),
        policy=str(data.get("policy") or "equal_share"),
        at=parse_time(data.get("at")),
        nodes=tuple(_node(n) for n in data.get("nodes") or () if isinstance(n, dict)),
        connectors=tuple(
            _connector(c) for c in data.get("connectors") or () if isinstance(c, dict)
        ),
        chargers={str(k): _charger(v) for k, v in chargers.items() if isinstance(v, dict)},
        dynamic_limits={str(k): _f(v) for k, v in limits.items()},
        meters={str(k): _meter(str(k), v) for k, v in meters.items() if isinstance(v, dict)},
        reaction_time_s=dict(data.get("reaction_time_s") or {}),
        decrease_time_s=dict(data.get("decrease_time_s") or {}),
    )


def sample_from_json(data: Mapping[str, Any]) -> Sample | None:
    at = parse_time(data.get("at"))
    if at is None:
        return None
    return Sample(at, tuple(data.get("nodes") or ()), tuple(data.get("connectors") or ()))
