"""`GET /metrics`: Prometheus metrics on the API's port, for a signed-in user or an API token.

The metrics cover every site, so a user limited to some sites may not read them (403). The
same metrics are served without authentication on `--metrics-listen` (`web/metrics_listener`)
when the operator asks for it.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from harmone.services.metrics import CONTENT_TYPE
from harmone.web.access import Access
from harmone.web.api.auth import current_access
from harmone.web.console.auth import optional_session
from harmone.web.runtime import RuntimeDep

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
            "description": "The metrics, in the Prometheus text format",
        },
        401: {"description": "No valid API token or console session"},
        403: {"description": "The user may see only some sites"},
    },
)
async def metrics(request: Request, rt: RuntimeDep) -> Response:
    """Prometheus metrics: `Authorization: Bearer TOKEN`, or a console session."""
    # Refusals are answered here, as JSON: outside /api/ the console would turn a raised
    # error into an HTML page, which says nothing to a Prometheus server.
    try:
        access: Access | None = None
        if "authorization" not in request.headers:
            session = await optional_session(request, rt)
            access = session.access if session is not None else None
        if access is None:
            access = await current_access(request, rt)  # 401 without a valid token
    except HTTPException as exc:
        return JSONResponse({"detail": exc.detail}, exc.status_code, dict(exc.headers or {}))
    if access.sites is not None:
        return JSONResponse(
            {"detail": "the metrics cover every site: they need a user who may see every site"},
            403,
        )
    return Response(await rt.metrics.scrape(), media_type=CONTENT_TYPE)
