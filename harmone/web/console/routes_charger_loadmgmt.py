"""The load-management part of the charging station page: its place in the tree, wiring,
limits, priority and profile unit, saved through `LoadManagementService` like every other
change of the site's configuration (all or nothing, refused if it changed meanwhile)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from harmone.errors import NotFound
from harmone.store.records import Charger, Site
from harmone.web.console.auth import ConsoleSession, SessionDep, checked_form
from harmone.web.console.forms import FormErrors
from harmone.web.console.loadmgmt_forms import charger_form_values, read_charger_form
from harmone.web.console.render import charger_path
from harmone.web.console.routes_chargers import _load, _page
from harmone.web.console.routes_loadmgmt import apply_edit, refused_status, version_of
from harmone.web.console.routes_sites import require
from harmone.web.runtime import Runtime, RuntimeDep

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

_NOT_SET_UP = "Load management is not set up for this site: set it up in its Load management tab."


def _saved(uid: str, charger_id: str) -> RedirectResponse:
    return RedirectResponse(
        f"{charger_path(uid, charger_id)}?done=lm-saved#load-management", status_code=303
    )


async def _refused(
    request: Request,
    rt: Runtime,
    session: ConsoleSession,
    site: Site,
    charger: Charger,
    form: FormData,
    errors: FormErrors,
) -> Response:
    try:
        config = rt.loadmgmt.config(site.uid)
    except NotFound:
        settings, node = None, None
    else:
        settings = config.settings_for(charger.id)
        node = settings.node or config.tree.id
    extra: dict[str, Any] = {
        "lm_values": charger_form_values(form, settings, node),
        "lm_errors": errors,
    }
    status = refused_status(errors)
    return await _page(request, rt, session, site, charger, status=status, extra=extra)


@router.post("/sites/{uid}/chargers/{charger_id}/load-management")
async def save_charger_load(
    uid: str, charger_id: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    form = await checked_form(request, session)
    site, charger = await _load(rt, session, uid, charger_id)
    require(session.access.require_writer)
    try:
        config = rt.loadmgmt.config(uid)
    except NotFound:
        return await _refused(request, rt, session, site, charger, form, {"form": _NOT_SET_UP})
    node_ids = {n.id for n in config.tree.walk()}
    read = read_charger_form(form, node_ids, config.settings_for(charger_id).connectors)
    errors = read.errors
    if not errors:
        settings = {k: v for k, v in read.settings.items() if v is not None}
        errors = await apply_edit(
            rt.loadmgmt.editing.set_charger(uid, charger_id, settings, version_of(form))
        )
    if errors:
        return await _refused(request, rt, session, site, charger, form, errors)
    log.info(
        "site=%s charger=%s load management settings changed by %s",
        uid,
        charger_id,
        session.access.user.email,
    )
    return _saved(uid, charger_id)


@router.post("/sites/{uid}/chargers/{charger_id}/load-management/reset")
async def reset_charger_load(
    uid: str, charger_id: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    """Forget the charging station's own settings: the site's defaults apply again."""
    form = await checked_form(request, session)
    site, charger = await _load(rt, session, uid, charger_id)
    require(session.access.require_writer)
    try:
        errors = await apply_edit(
            rt.loadmgmt.editing.reset_charger(uid, charger_id, version_of(form))
        )
    except NotFound:
        errors = {"form": _NOT_SET_UP}
    if errors:
        return await _refused(request, rt, session, site, charger, form, errors)
    log.info(
        "site=%s charger=%s back on the site's default settings, by %s",
        uid,
        charger_id,
        session.access.user.email,
    )
    return _saved(uid, charger_id)
