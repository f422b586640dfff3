"""REST API v1 for load management: configuration, status, time series, meters, limits."""

from __future__ import annotations

import statistics
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from harmone.errors import ConfigError
from harmone.loadmgmt.controller import SiteController
from harmone.loadmgmt.meters import measurement_from_push
from harmone.web.api.auth import UserDep, WriterDep
from harmone.web.runtime import Runtime, RuntimeDep
from harmone.web.schemas import UtcDatetime

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/sites/{uid}/load-management", tags=["load management"])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MeterIn(_Strict):
    host: str
    port: int = Field(502, ge=1, le=65535)
    unit_id: int = Field(1, ge=0, le=255)
    register_map: str = Field(
        "eastron_sdm630", description="eastron_sdm630, carlo_gavazzi_em24 or custom"
    )
    custom: dict[str, Any] | None = Field(None, description="the map, for register_map=custom")
    poll_interval: float = Field(5.0, gt=0)
    timeout: float = Field(2.0, gt=0)
    failures_before_failed: int = Field(3, ge=1)
    max_age: float = Field(60.0, gt=0)


class NodeIn(_Strict):
    id: str = Field(description="unique within the site (nodes and chargers)")
    max_current: float = Field(ge=0, description="fuse, A per phase")
    safety_current: float = Field(0, ge=0, description="limit while its meter has failed")
    max_imbalance: float | None = Field(None, ge=0, description="max phase difference, A")
    metered: bool = Field(False, description="a meter measures its non-charger load")
    meter: MeterIn | None = Field(None, description="a Modbus TCP meter read by HARMON-E")
    children: list[NodeIn] = []


class ChargerIn(_Strict):
    node: str | None = Field(None, description="node it hangs under; null: the root")
    max_current: float = Field(32, gt=0)
    min_current: float = Field(6, ge=0, description="IEC 61851: never granted between 0 and this")
    phases: Literal[1, 3] | None = Field(
        None, description="currents it reports; without wiring: 1 = L-N, 3 = three-phase (default)"
    )
    wiring: Literal["L-N", "L-L", "3-phase"] | None = Field(
        None, description="how it is connected; L-L names its two lines in phase_rotation"
    )
    phase_rotation: list[Literal["L1", "L2", "L3"]] | None = Field(
        None, description='grid phase of each of the charger\'s phases, e.g. ["L2","L3","L1"]'
    )
    priority: int = 0
    tx_default_limit: float = Field(0, ge=0, description="TxDefaultProfile limit, A")
    rate_unit: Literal["A", "W"] = "A"
    voltage: float | None = Field(
        None, ge=100, le=500, description="L-N/3-phase: to neutral (230); L-L: line to line"
    )
    connectors: list[int] = [1]
    default_dwell_minutes: float | None = Field(
        None, ge=0, description="typical stay, when the car does not say when it leaves"
    )
    default_energy_kwh: float | None = Field(
        None, ge=0, description="typical energy need, when the car does not say it"
    )


class LoadConfigIn(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "policy": "equal_share",
                    "tree": {
                        "id": "grid",
                        "max_current": 63,
                        "children": [{"id": "garage", "max_current": 32}],
                    },
                    "chargers": {"CP-1": {"node": "garage", "max_current": 32}},
                }
            ]
        },
    )

    enabled: bool = True
    policy: Literal["equal_share", "first_come_first_served", "priority"] = "equal_share"
    resend_step: float = Field(1.0, ge=0, description="re-send when the limit moves this much, A")
    min_interval: float = Field(10.0, ge=0, description="increases at most this often, s")
    tree: NodeIn
    chargers: dict[str, ChargerIn] = {}
    default_charger: ChargerIn | None = None


class ReadingIn(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"current": [12.5, 10.0, 8.0]}, {"power": [2300, 0, 0]}]},
    )

    current: list[float] | None = Field(
        None, min_length=3, max_length=3, description="non-charger load per phase, A"
    )
    power: list[float] | None = Field(
        None, min_length=3, max_length=3, description="per phase, W (with voltage)"
    )
    voltage: float | None = Field(None, description="phase-to-neutral voltage for power")
    at: str | None = Field(None, description="ISO 8601 with UTC offset; default: now")


class DynamicLimitIn(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"limit": 16}]})

    limit: float | None = Field(description="A per phase; null removes it; 0 suspends charging")


def _controller(rt: Runtime, uid: str) -> SiteController:
    ctl = rt.loadmgmt.controllers.get(uid)
    if ctl is None:
        raise HTTPException(
            404, "load management is not configured for this site: PUT its configuration first"
        )
    return ctl


@router.get("")
async def get_config(uid: str, rt: RuntimeDep, _: UserDep) -> dict[str, Any]:
    await rt.store.sites.get(uid)
    return _controller(rt, uid).config.to_json()


@router.put("")
async def put_config(uid: str, body: LoadConfigIn, rt: RuntimeDep, _: WriterDep) -> dict[str, Any]:
    """Set the site's electrical tree, charger settings and policy (validated as a whole)."""
    await rt.store.sites.get(uid)
    try:
        config = await rt.loadmgmt.configure(uid, body.model_dump(exclude_none=True))
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    return config.to_json()


@router.get("/status")
async def status(uid: str, rt: RuntimeDep, _: UserDep) -> dict[str, Any]:
    """The allocation in force: per node limit, load and headroom; per connector its grant,
    what was sent, the measured draw, and why it got less than it wanted."""
    await rt.store.sites.get(uid)
    ctl = _controller(rt, uid)
    a = ctl.last
    chargers = {}
    for cid, st in ctl.chargers.items():
        chargers[cid] = {
            "connected": st.connected,
            "flagged": st.flagged,
            "stack_level": st.stack_level,
            "tx_default_sent": st.default_sent,
            "cpms_caps": {str(k): c.amps for k, c in st.caps.items()},
            "transactions": {
                str(k): {
                    "transaction_id": t.transaction_id,
                    "charging_since": t.charging_since,
                    "measured": t.measured,
                    "sent_limit": t.sent_limit,
                }
                for k, t in st.txs.items()
            },
        }
    rts = list(ctl.reaction_times)
    poller = rt.loadmgmt.pollers.get(uid)
    return {
        "enabled": ctl.config.enabled,
        "policy": ctl.config.policy.value,
        "at": a.at if a else None,
        "nodes": [
            {
                "id": n.node_id,
                "limit": n.limit,
                "limit_source": n.limit_source.value,
                "meter": n.meter.value,
                "load": n.load,
                "charger_load": n.charger_load,
                "non_charger_load": n.non_charger_load,
                "headroom": n.headroom,
                "imbalance": n.imbalance,
            }
            for n in (a.nodes if a else ())
        ],
        "connectors": [
            {
                "charger_id": g.charger_id,
                "connector_id": g.connector_id,
                "charging": g.charging,
                "reserved": g.reserved,
                "granted": g.limit_to_send,
                "per_phase": g.per_phase,
                "need": g.need,
                "reasons": [r.message for r in g.reasons],
            }
            for g in (a.connectors if a else ())
        ],
        "chargers": chargers,
        "dynamic_limits": ctl.dynamic_limits,
        "meters": {
            node: {
                "health": st.health.value,
                "meter": st.meter,
                "last_error": st.last_error,
                "last_success": st.last_success,
                "last_reading": list(st.last_reading.load) if st.last_reading else None,
            }
            for node, st in (poller.status().items() if poller else ())
        },
        "reaction_time_s": {
            "count": len(rts),
            "p50": statistics.median(rts) if rts else None,
            "max": max(rts) if rts else None,
        },
    }


@router.get("/timeseries")
async def timeseries(
    uid: str,
    rt: RuntimeDep,
    _: UserDep,
    since: UtcDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 720,
) -> list[dict[str, Any]]:
    """Limit, measured load and granted current per node and connector over time (one sample
    per allocation round, the last hour or so, in memory)."""
    await rt.store.sites.get(uid)
    ctl = _controller(rt, uid)
    samples = [s for s in ctl.series if since is None or s.at > since][-limit:]
    return [{"at": s.at, "nodes": list(s.nodes), "connectors": list(s.connectors)} for s in samples]


@router.post("/nodes/{node_id}/readings", status_code=202)
async def push_reading(
    uid: str, node_id: str, body: ReadingIn, rt: RuntimeDep, _: WriterDep
) -> dict[str, str]:
    """A meter reading of the node's non-charger (building) load, pushed by an integration."""
    ctl = _controller(rt, uid)
    if node_id not in {n.id for n in ctl.config.tree.walk()}:
        raise HTTPException(404, f"no node {node_id!r} in this site's tree")
    try:
        m = measurement_from_push(node_id, body.model_dump(exclude_none=True), rt.hub.clock.now())
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    ctl.measurement(m)
    return {"status": "accepted"}


@router.put("/nodes/{node_id}/dynamic-limit")
async def put_dynamic_limit(
    uid: str, node_id: str, body: DynamicLimitIn, rt: RuntimeDep, _: WriterDep
) -> dict[str, Any]:
    """An external limit (energy manager, grid operator): the lower of it and the fuse holds."""
    ctl = _controller(rt, uid)
    if node_id not in {n.id for n in ctl.config.tree.walk()}:
        raise HTTPException(404, f"no node {node_id!r} in this site's tree")
    if body.limit is not None and body.limit < 0:
        raise HTTPException(422, "limit must be >= 0")
    ctl.set_dynamic_limit(node_id, body.limit)
    return {"node": node_id, "limit": body.limit}
