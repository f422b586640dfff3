"""REST API v1: connection attempts, per site and on unknown sites."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query

from harmone.errors import Forbidden
from harmone.web.api.auth import AccessDep, UserDep
from harmone.web.runtime import RuntimeDep
from harmone.web.schemas import AttemptOut, attempt_out

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["connection log"])


@router.get("/sites/{uid}/connection-log", response_model=list[AttemptOut])
async def connection_log(
    uid: str,
    rt: RuntimeDep,
    _: UserDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AttemptOut]:
    """Attempts to connect to this site's OCPP URL, newest first."""
    await rt.sites.get(uid)
    await rt.hub.flush_attempts()
    return [attempt_out(a) for a in await rt.store.attempts.of_site(uid, limit)]


@router.get("/connection-log/unknown-sites", response_model=list[AttemptOut])
async def unknown_site_log(
    rt: RuntimeDep,
    access: AccessDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AttemptOut]:
    """Attempts whose site UID matches no site: a mistyped or stale OCPP URL shows here.

    Only for users who see every site: these attempts may concern anybody's chargers."""
    if access.restricted:
        raise Forbidden("only users who see every site may read this log")
    await rt.hub.flush_attempts()
    return [attempt_out(a) for a in await rt.store.attempts.unknown_sites(limit)]
