"""The charging station page: identity, boot data, connectors, its CPMS, its settings, and
the live message inspector."""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from harmone.errors import ConfigError
from harmone.store.records import Charger, Site
from harmone.web.console.auth import ConsoleSession, PageError, SessionDep, checked_form
from harmone.web.console.forms import field, form_errors
from harmone.web.console.frames import describe_frames
from harmone.web.console.loadmgmt_view import charger_load_context
from harmone.web.console.render import charger_path, render
from harmone.web.console.routes_sites import load_site, require
from harmone.web.console.sse import charger_stream, event_stream_response
from harmone.web.console.state import console_state
from harmone.web.runtime import Runtime, RuntimeDep
from harmone.web.schemas import charger_out, site_out

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

_NOTICES = {
    "saved": "Saved.",
    "reconnected": "Saved. The charger was disconnected so that it reconnects through its "
    "new CPMS; it should be back online within seconds.",
}


async def _load(
    rt: Runtime, session: ConsoleSession, uid: str, charger_id: str
) -> tuple[Site, Charger]:
    site = await load_site(rt, session, uid)
    charger = await rt.chargers.find(uid, charger_id)
    if charger is None:
        raise PageError(
            404,
            "Charging station not found",
            f"Site {site.name} has no charging station {charger_id!r}.",
        )
    return site, charger


async def _page(
    request: Request,
    rt: Runtime,
    session: ConsoleSession,
    site: Site,
    charger: Charger,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    extra: dict[str, Any] | None = None,
) -> Response:
    out = charger_out(charger, rt.hub.live_state(site.uid, charger.id), site)
    limit = console_state(request).settings.inspector_frames
    # a gateway site's charger: as its box reported them
    records = rt.hub.frames(site.uid, charger.id) or rt.gateways.frames(site.uid, charger.id)
    frames = describe_frames(records[-limit:])
    context: dict[str, Any] = {
        "site": site_out(site, rt.sites.ocpp_url(site)),
        "c": out,
        "frames": frames,
        "frame_limit": limit,
        "values": values
        or {
            "name": charger.name or "",
            "cpms_mode": "own" if charger.cpms_url else "site",
            "cpms_url": charger.cpms_url or "",
            "secondary_cpms_url": charger.secondary_cpms_url or "",
        },
        "errors": errors or {},
        "notice": _NOTICES.get(request.query_params.get("done", "")),
    }
    done = request.query_params.get("done")
    context.update(await charger_load_context(rt, site.uid, charger.id, done))
    context.update(extra or {})
    return render(request, "chargers/charger.html", context, session=session, status=status)


@router.get("/sites/{uid}/chargers/{charger_id}")
async def charger_page(
    uid: str, charger_id: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    site, charger = await _load(rt, session, uid, charger_id)
    return await _page(request, rt, session, site, charger)


@router.post("/sites/{uid}/chargers/{charger_id}")
async def save_charger(
    uid: str, charger_id: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    form = await checked_form(request, session)
    site, charger = await _load(rt, session, uid, charger_id)
    require(session.access.require_writer)
    values = {k: field(form, k) for k in ("name", "cpms_mode", "cpms_url", "secondary_cpms_url")}
    own = values["cpms_mode"] == "own"
    if own and not values["cpms_url"]:
        return await _page(
            request,
            rt,
            session,
            site,
            charger,
            values,
            {"cpms_url": "Enter the CPMS URL, or choose to use the site's CPMS."},
            422,
        )
    changes = {"name": values["name"] or None, "cpms_url": values["cpms_url"] if own else None}
    if "secondary_cpms_url" in form:  # (a form from before the field existed leaves it)
        changes["secondary_cpms_url"] = values["secondary_cpms_url"] or None
    try:
        update = await rt.chargers.update(uid, charger_id, changes)
    except ConfigError as exc:
        errors = form_errors(exc, ("name", "cpms_url", "secondary_cpms_url"))
        return await _page(request, rt, session, site, charger, values, errors, 422)
    done = "reconnected" if update.reconnected else "saved"
    return RedirectResponse(f"{charger_path(uid, charger_id)}?done={done}", status_code=303)


@router.get("/sites/{uid}/chargers/{charger_id}/events")
async def charger_events(
    uid: str,
    charger_id: str,
    request: Request,
    rt: RuntimeDep,
    session: SessionDep,
    after: Annotated[float | None, Query(allow_inf_nan=False)] = None,
) -> StreamingResponse:
    await _load(rt, session, uid, charger_id)
    # A reconnecting EventSource says what it saw last; that wins over the page's value.
    last_id = request.headers.get("last-event-id")
    if last_id:
        with contextlib.suppress(ValueError):
            after = float(last_id) if math.isfinite(float(last_id)) else after
    settings = console_state(request).settings
    return event_stream_response(charger_stream(rt, settings, uid, charger_id, after))
