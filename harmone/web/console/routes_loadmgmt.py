"""A site's "Load management" tab: the electrical tree with what is in force at each node, the
live chart and connector table, and the forms that change the tree.

Every change goes through `LoadManagementService` as the REST API's do (`configure`, `edit`,
`set_dynamic_limit`): the whole configuration is validated by the same rules and stored
completely or not at all. A form carries the version of the configuration it was made on, so a
change prepared on a configuration that someone else changed meanwhile is refused rather than
undoing theirs. Viewers see everything and change nothing (the server refuses their POSTs).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.datastructures import FormData
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from harmone.errors import ConfigError, Conflict
from harmone.store.records import Site
from harmone.web.console.auth import ConsoleSession, SessionDep, checked_form
from harmone.web.console.forms import FormErrors
from harmone.web.console.forms import field as text
from harmone.web.console.loadmgmt_forms import (
    METER_MAPS,
    NodeForm,
    node_form_values,
    read_horizon,
    read_node_form,
)
from harmone.web.console.loadmgmt_stream import (
    load_stream,
    managed_by_box,
    reported_series_json,
    series_json,
)
from harmone.web.console.loadmgmt_view import POLICIES, fmt, site_load_view
from harmone.web.console.render import render
from harmone.web.console.routes_sites import _site_tab, load_site, require
from harmone.web.console.sse import event_stream_response
from harmone.web.console.state import console_state
from harmone.web.runtime import Runtime, RuntimeDep

__all__ = ["apply_edit", "people_words", "refused_status", "router", "version_of"]

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

_NOTICES = {
    "setup": "Load management is set up. Add the clusters behind their own fuses, then set up "
    "each charging station on its page.",
    "settings": "Saved. The new settings are in force.",
    "added": "Cluster added.",
    "saved": "Saved. The new limits are in force.",
    "removed": "Cluster removed; what was below it is now below its parent.",
    "limit-set": "Dynamic limit set: it is in force now.",
    "limit-cleared": "Dynamic limit removed: the cluster's own limit is in force again.",
    "gone": "That cluster does not exist any more: it was removed meanwhile.",
    "not-set-up": "Load management is not set up for this site yet.",
    "already": "Load management was already set up (by someone else, or in another window): "
    "nothing was changed. Here it is.",
}

#: The configuration's own field names, as the console's labels say them.
_WORDS = {
    "max_current": "limit",
    "safety_current": "safety current",
    "min_current": "minimum current",
    "tx_default_limit": "TxDefaultProfile limit",
    "max_imbalance": "phase imbalance limit",
    "phase_rotation": "phase rotation",
    "dynamic_limit": "dynamic limit",
}


def people_words(message: str) -> str:
    """A ConfigError's message with the configuration's field names as the console says them."""
    words = dict(_WORDS)
    if message.lower().startswith(("charger", "default_charger")):
        words["max_current"] = "maximum current"  # a cluster's is its limit
    for name, said in words.items():
        message = message.replace(name, said)
    return message[:1].upper() + message[1:]


async def _tab(
    request: Request,
    rt: Runtime,
    session: ConsoleSession,
    site: Site,
    extra: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    context: dict[str, Any] = {
        "lm": await site_load_view(rt, site.uid),
        "fmt": fmt,
        "policies": POLICIES,
        "errors": {},
        "values": {},
        "notice": _NOTICES.get(request.query_params.get("done", "")),
    }
    context.update(extra or {})
    return await _site_tab(request, rt, session, site, "load-management", context, status)


def refused_status(errors: FormErrors) -> int:
    """409 when the change was made on an outdated configuration, else 422; the marker of the
    former is taken out of `errors`."""
    return 409 if errors.pop("conflict", None) else 422


def _done(uid: str, what: str) -> RedirectResponse:
    return RedirectResponse(f"/sites/{uid}/load-management?done={what}", status_code=303)


@router.get("/sites/{uid}/load-management")
async def load_tab(uid: str, request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    site = await load_site(rt, session, uid)
    return await _tab(request, rt, session, site)


@router.post("/sites/{uid}/load-management/setup")
async def set_up(uid: str, request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    """The first configuration: the grid connection alone."""
    form = await checked_form(request, session)
    site = await load_site(rt, session, uid)
    require(session.access.require_writer)
    read = read_node_form(form, new=True)
    errors = dict(read.errors)
    if not errors:
        root = {k: v for k, v in read.fields.items() if v is not None}
        try:
            await rt.loadmgmt.editing.set_up(uid, root)
        except Conflict:
            return _done(uid, "already")
        except ConfigError as exc:
            errors["form"] = people_words(str(exc))
        else:
            log.info("site=%s load management set up by %s", uid, session.access.user.email)
            return _done(uid, "setup")
    values = node_form_values(form, None)
    return await _tab(request, rt, session, site, {"errors": errors, "values": values}, 422)


def version_of(form: FormData) -> str | None:
    """The version of the configuration the form was made on."""
    return text(form, "version") or None


async def apply_edit(change: Awaitable[Any]) -> FormErrors:
    """Wait for a change of `LoadManagementService.editing`; the messages to show if it was
    refused."""
    try:
        await change
    except Conflict as exc:
        return {
            "form": people_words(str(exc))
            + ". The form now shows your entries on the current configuration: check them "
            "and save again.",
            "conflict": "1",
        }
    except ConfigError as exc:
        return {"form": f"Not saved: {people_words(str(exc))}"}
    return {}


@router.post("/sites/{uid}/load-management/settings")
async def save_settings(
    uid: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    form = await checked_form(request, session)
    site = await load_site(rt, session, uid)
    require(session.access.require_writer)
    policy = text(form, "policy")
    horizon, horizon_error = read_horizon(form)
    if policy not in POLICIES or horizon_error:
        errors: FormErrors = {}
        if policy not in POLICIES:
            errors["policy"] = "Choose how the current is shared."
        if horizon_error:
            errors["continuity_horizon_minutes"] = horizon_error
    else:
        enabled = text(form, "enabled") == "1"
        errors = await apply_edit(
            rt.loadmgmt.editing.set_site_settings(uid, enabled, policy, version_of(form), horizon)
        )
        if not errors:
            log.info(
                "site=%s load management %s, policy %s, by %s",
                uid,
                "enabled" if enabled else "disabled",
                policy,
                session.access.user.email,
            )
            return _done(uid, "settings")
    status = refused_status(errors)
    return await _tab(request, rt, session, site, {"errors": errors}, status)


# -- clusters -----------------------------------------------------------------------------------


async def _node_page(
    request: Request,
    rt: Runtime,
    session: ConsoleSession,
    site: Site,
    node_id: str | None,
    values: dict[str, str],
    errors: FormErrors | None = None,
    status: int = 200,
    *,
    unreachable: bool = False,
) -> Response:
    view = await site_load_view(rt, site.uid)
    config = view.config
    assert config is not None
    paths = rt.loadmgmt.editing.node_paths(site.uid)
    inside = {n for n, path in paths.items() if node_id in path} if node_id else set()
    context = {
        "site": site,
        "lm": view,
        "fmt": fmt,
        "node_id": node_id,
        "is_root": node_id == config.tree.id,
        "parents": [r for r in view.rows if r.id not in inside],
        "current_parent": paths[node_id][-2] if node_id and len(paths[node_id]) > 1 else None,
        "values": values,
        "errors": errors or {},
        "meter_maps": METER_MAPS,
        "custom_map": bool(node_id and (config.meters_json.get(node_id) or {}).get("custom")),
        "unreachable": unreachable,
    }
    return render(request, "loadmgmt/node.html", context, session=session, status=status)


def _node_or_redirect(rt: Runtime, uid: str, node_id: str | None) -> RedirectResponse | None:
    editing = rt.loadmgmt.editing
    if not editing.configured(uid):
        return _done(uid, "not-set-up")
    if node_id is not None and editing.node(uid, node_id) is None:
        return _done(uid, "gone")
    return None


@router.get("/sites/{uid}/load-management/nodes/new")
async def new_node_page(
    uid: str,
    request: Request,
    rt: RuntimeDep,
    session: SessionDep,
    parent: Annotated[str | None, Query()] = None,
) -> Response:
    site = await load_site(rt, session, uid)
    require(session.access.require_writer)
    if (away := _node_or_redirect(rt, uid, parent)) is not None:
        return away
    values = node_form_values(None, {"safety_current": 0.0})
    values["parent"] = parent or rt.loadmgmt.config(uid).tree.id
    return await _node_page(request, rt, session, site, None, values)


@router.post("/sites/{uid}/load-management/nodes")
async def add_node_form(
    uid: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    form = await checked_form(request, session)
    site = await load_site(rt, session, uid)
    require(session.access.require_writer)
    if (away := _node_or_redirect(rt, uid, None)) is not None:
        return away
    read = read_node_form(form, new=True)
    parent = read.parent or rt.loadmgmt.config(uid).tree.id
    errors = dict(read.errors) or await _probe(rt, read, read.fields["id"], None)
    if not errors:
        node = {k: v for k, v in read.fields.items() if v is not None}
        errors = await apply_edit(rt.loadmgmt.editing.add_node(uid, parent, node, version_of(form)))
        if not errors:
            log.info(
                "site=%s cluster %s added below %s by %s",
                uid,
                node["id"],
                parent,
                session.access.user.email,
            )
            return _done(uid, "added")
    values = node_form_values(form, None)
    status = refused_status(errors)
    return await _node_page(
        request, rt, session, site, None, values, errors, status, unreachable=_unreachable(errors)
    )


async def _probe(
    rt: Runtime, read: NodeForm, node_id: str, before: dict[str, Any] | None
) -> FormErrors:
    """Read a new or changed Modbus meter once before it is saved: people should learn now,
    not from a cluster held at its safety current, that the meter cannot be reached."""
    meter = read.meter
    if meter is None or read.save_unreachable or meter == before:
        return {}
    try:
        why = await rt.loadmgmt.editing.probe_meter(node_id or "new", meter)
    except ConfigError as exc:
        return {"meter_host": people_words(str(exc))}
    if why is None:
        return {}
    safety = read.fields.get("safety_current") or 0.0
    return {
        "meter_host": f"The meter at {meter['host']}:{meter['port']} (unit {meter['unit_id']}) "
        f"did not answer: {why}. Check its address, port and unit id. If it is not installed "
        f"yet, tick “Save anyway”: until it answers, this cluster is held at its safety "
        f"current ({safety:g} A).",
        "unreachable": "1",
    }


def _unreachable(errors: FormErrors) -> bool:
    return errors.pop("unreachable", "") == "1"


@router.get("/sites/{uid}/load-management/nodes/{node_id}")
async def node_page(
    uid: str, node_id: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    site = await load_site(rt, session, uid)
    require(session.access.require_writer)
    if (away := _node_or_redirect(rt, uid, node_id)) is not None:
        return away
    editing = rt.loadmgmt.editing
    values = node_form_values(None, editing.node(uid, node_id))
    path = editing.node_paths(uid)[node_id]
    values["parent"] = path[-2] if len(path) > 1 else ""
    return await _node_page(request, rt, session, site, node_id, values)


@router.post("/sites/{uid}/load-management/nodes/{node_id}")
async def save_node(
    uid: str, node_id: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    form = await checked_form(request, session)
    site = await load_site(rt, session, uid)
    require(session.access.require_writer)
    if (away := _node_or_redirect(rt, uid, node_id)) is not None:
        return away
    before = rt.loadmgmt.editing.node(uid, node_id) or {}
    read = read_node_form(form, new=False, existing_meter=before.get("meter"))
    errors = dict(read.errors) or await _probe(rt, read, node_id, before.get("meter"))
    if not errors:
        errors = await apply_edit(
            rt.loadmgmt.editing.update_node(
                uid, node_id, read.fields, read.parent, version_of(form)
            )
        )
        if not errors:
            log.info("site=%s cluster %s changed by %s", uid, node_id, session.access.user.email)
            return _done(uid, "saved")
    values = node_form_values(form, None)
    status = refused_status(errors)
    return await _node_page(
        request,
        rt,
        session,
        site,
        node_id,
        values,
        errors,
        status,
        unreachable=_unreachable(errors),
    )


@router.get("/sites/{uid}/load-management/nodes/{node_id}/remove")
async def remove_page(
    uid: str, node_id: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    site = await load_site(rt, session, uid)
    require(session.access.require_writer)
    if (away := _node_or_redirect(rt, uid, node_id)) is not None:
        return away
    return await _remove_page(request, rt, session, site, node_id, {})


async def _remove_page(
    request: Request,
    rt: Runtime,
    session: ConsoleSession,
    site: Site,
    node_id: str,
    errors: FormErrors,
    status: int = 200,
) -> Response:
    view = await site_load_view(rt, site.uid)
    assert view.config is not None
    path = rt.loadmgmt.editing.node_paths(site.uid)[node_id]
    node = view.node(node_id)
    context = {
        "site": site,
        "lm": view,
        "fmt": fmt,
        "node_id": node_id,
        "parent": path[-2] if len(path) > 1 else None,
        "clusters": [c.id for c in node.children] if node else [],
        "chargers": view.chargers_under(node_id),
        "errors": errors,
    }
    return render(request, "loadmgmt/remove.html", context, session=session, status=status)


@router.post("/sites/{uid}/load-management/nodes/{node_id}/remove")
async def remove_node_form(
    uid: str, node_id: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    form = await checked_form(request, session)
    site = await load_site(rt, session, uid)
    require(session.access.require_writer)
    if (away := _node_or_redirect(rt, uid, node_id)) is not None:
        return away
    errors = await apply_edit(rt.loadmgmt.editing.remove_node(uid, node_id, version_of(form)))
    if not errors:
        log.info("site=%s cluster %s removed by %s", uid, node_id, session.access.user.email)
        return _done(uid, "removed")
    return await _remove_page(request, rt, session, site, node_id, errors, refused_status(errors))


@router.post("/sites/{uid}/load-management/nodes/{node_id}/dynamic-limit")
async def dynamic_limit_form(
    uid: str, node_id: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    """Set or remove a node's dynamic limit, as an energy manager does over the REST API."""
    form = await checked_form(request, session)
    site = await load_site(rt, session, uid)
    require(session.access.require_writer)
    if (away := _node_or_redirect(rt, uid, node_id)) is not None:
        return away
    key = f"limit:{node_id}"
    clear = text(form, "action") == "clear"
    raw = text(form, "limit")
    limit: float | None = None
    errors: FormErrors = {}
    if not clear:
        try:
            limit = float(raw.replace(",", "."))
        except ValueError:
            limit = math.nan
        if not math.isfinite(limit):  # words, NaN, Infinity, 1e999: not a limit at all
            errors[key] = "Enter the limit in amps per phase, e.g. 32 (0 suspends charging)."
        elif limit < 0:
            errors[key] = "The limit cannot be negative (0 suspends charging)."
    if not errors:
        by = f"{session.access.user.email} (console)"
        try:
            rt.loadmgmt.set_dynamic_limit(uid, node_id, limit, by=by)
        except ConfigError as exc:
            errors[key] = people_words(str(exc))
        else:
            log.info(
                "site=%s node=%s dynamic limit %s by %s",
                uid,
                node_id,
                "removed" if limit is None else f"{limit:g} A",
                session.access.user.email,
            )
            return _done(uid, "limit-cleared" if clear else "limit-set")
    values = {key: raw}
    return await _tab(request, rt, session, site, {"errors": errors, "values": values}, 422)


# -- live -----------------------------------------------------------------------------------------


@router.get("/sites/{uid}/load-management/events")
async def load_events(
    uid: str,
    request: Request,
    rt: RuntimeDep,
    session: SessionDep,
    after: Annotated[float | None, Query()] = None,
) -> StreamingResponse:
    """`after`: the time (s since 1970) of the newest point the chart has; a reconnecting
    EventSource's Last-Event-ID wins over it."""
    site = await load_site(rt, session, uid)
    last_id = request.headers.get("last-event-id")
    if last_id:
        with contextlib.suppress(ValueError):
            after = float(last_id)
    since = None
    if after is not None and math.isfinite(after):
        with contextlib.suppress(OverflowError, OSError, ValueError):
            since = datetime.fromtimestamp(after, UTC)
    settings = console_state(request).settings
    return event_stream_response(load_stream(rt, settings, site.uid, site_load_view, since))


@router.get("/sites/{uid}/load-management/series")
async def load_series(
    uid: str,
    rt: RuntimeDep,
    session: SessionDep,
    seconds: Annotated[int, Query(ge=60, le=86400)] = 900,
) -> JSONResponse:
    """The chart's data for the last `seconds`: every node, every phase."""
    await load_site(rt, session, uid)
    if await managed_by_box(rt, uid):
        data = reported_series_json(rt, uid, seconds)
    else:
        data = series_json(rt.loadmgmt, uid, seconds)
    return JSONResponse(data, headers={"Cache-Control": "no-store"})
