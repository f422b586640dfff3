"""REST API v1 for load management: configuration, status, time series, meters, limits.

Everything goes through `LoadManagementService` (`rt.loadmgmt`); its ConfigError and NotFound
become 422 and 404 in `harmone.web.http_errors`.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from harmone.loadmgmt.service import SiteLoadStatus
from harmone.web.api.auth import UserDep, WriterDep
from harmone.web.runtime import RuntimeDep
from harmone.web.schemas import UtcDatetime

__all__ = ["router", "status_json"]

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
    continuity_horizon_minutes: float | None = Field(
        None,
        ge=1,
        le=1440,
        description="continuity head start: above their minimum, cars that took more this "
        "session are favoured, spread over this horizon (min); null: off (default)",
    )
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


@router.get("")
async def get_config(uid: str, rt: RuntimeDep, _: UserDep) -> dict[str, Any]:
    await rt.sites.get(uid)
    return rt.loadmgmt.config(uid).to_json()


@router.put("")
async def put_config(uid: str, body: LoadConfigIn, rt: RuntimeDep, _: WriterDep) -> dict[str, Any]:
    """Set the site's electrical tree, charger settings and policy (validated as a whole)."""
    await rt.sites.get(uid)
    config = await rt.loadmgmt.configure(uid, body.model_dump(exclude_none=True))
    return config.to_json()


@router.get("/status")
async def status(uid: str, rt: RuntimeDep, _: UserDep) -> dict[str, Any]:
    """The allocation in force: per node limit, load and headroom; per connector its grant,
    the limit in force at the charger, the measured draw, and why it got less than it wanted."""
    site = await rt.sites.get(uid)
    if site.type == "gateway":
        # Its chargers are managed by its box: what the box last reported, if it did.
        reported = rt.gateways.load_status(uid)
        if reported is not None:
            return reported
    return status_json(rt.loadmgmt.status(uid))


def status_json(st: SiteLoadStatus) -> dict[str, Any]:
    """A site's load-management status as the REST API answers it (a gateway box sends the
    same up to its cloud)."""
    return {
        "enabled": st.enabled,
        "policy": st.policy,
        "at": st.at,
        "nodes": [dataclasses.asdict(n) for n in st.nodes],
        "connectors": [dataclasses.asdict(c) for c in st.connectors],
        "chargers": {cid: dataclasses.asdict(c) for cid, c in st.chargers.items()},
        "dynamic_limits": st.dynamic_limits,
        "meters": {
            node: {
                "health": m.health.value,
                "meter": m.meter,
                "last_error": m.last_error,
                "last_success": m.last_success,
                "last_reading": list(m.last_reading.load) if m.last_reading else None,
            }
            for node, m in st.meters.items()
        },
        "reaction_time_s": st.reaction_time_s,
        "decrease_time_s": st.decrease_time_s,
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
    site = await rt.sites.get(uid)
    if site.type == "gateway":
        # Its chargers are managed by its box: the samples the box sent, if it did.
        reported = rt.gateways.load_series(uid, since, limit)
        if reported is not None:
            return reported
    samples = rt.loadmgmt.timeseries(uid, since, limit)
    return [{"at": s.at, "nodes": list(s.nodes), "connectors": list(s.connectors)} for s in samples]


@router.post("/nodes/{node_id}/readings", status_code=202)
async def push_reading(
    uid: str, node_id: str, body: ReadingIn, rt: RuntimeDep, _: WriterDep
) -> dict[str, str]:
    """A meter reading of the node's non-charger (building) load, pushed by an integration."""
    rt.loadmgmt.push_reading(uid, node_id, body.model_dump(exclude_none=True))
    return {"status": "accepted"}


@router.put("/nodes/{node_id}/dynamic-limit")
async def put_dynamic_limit(
    uid: str, node_id: str, body: DynamicLimitIn, rt: RuntimeDep, user: WriterDep
) -> dict[str, Any]:
    """An external limit (energy manager, grid operator): the lower of it and the fuse holds."""
    rt.loadmgmt.set_dynamic_limit(uid, node_id, body.limit, by=f"{user.email} (REST API)")
    return {"node": node_id, "limit": body.limit}
