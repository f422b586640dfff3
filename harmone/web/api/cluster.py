"""REST API v1: this node's view of its cluster (`harmone serve --cluster`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from harmone.web.api.auth import UserDep
from harmone.web.runtime import RuntimeDep

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/cluster", tags=["cluster"])


@router.get("")
async def cluster_status(rt: RuntimeDep, _: UserDep) -> dict[str, Any]:
    """This node, the nodes alive, and which node runs each site's load manager. A single
    node (started without --cluster) answers with `node` null and nothing else."""
    if rt.cluster is None:
        return {
            "node": None,
            "name": None,
            "nats_url": None,
            "nodes": [],
            "leases": {},
            "sites_led": [],
        }
    return rt.cluster.status()
