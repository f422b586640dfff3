"""Site pages: the list, creation, and a site's tabs (Control Hub, charging stations,
connection log, settings), deletion, and the live stream of the charging stations tab.

Changes go through `SiteService`, as the REST API's do, so that the console and the API
cannot drift apart (same rules, same reconnection of chargers when a CPMS changes).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from harmone.errors import ConfigError, Forbidden
from harmone.store.records import Site
from harmone.web.console.auth import ConsoleSession, PageError, SessionDep, checked_form
from harmone.web.console.control_hub import ocpp_url_facts
from harmone.web.console.forms import field, form_errors
from harmone.web.console.render import render
from harmone.web.console.sse import (
    LOG_ROWS,
    connection_log_stream,
    event_stream_response,
    site_stream,
)
from harmone.web.console.state import console_state
from harmone.web.runtime import Runtime, RuntimeDep
from harmone.web.schemas import AttemptOut, SiteOut, attempt_out, charger_out, site_out

__all__ = ["load_site", "require", "router"]

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

_NOTICES = {
    "created": "Site created. Copy its OCPP URL below and paste it into each of its chargers.",
    "saved": "Site settings saved.",
    "deleted": "Site deleted. Its chargers were removed from HARMON-E.",
    "revoked": "Gateway box revoked: it is refused from now on. Pair a box again to reconnect.",
}


def require(check: Any) -> None:
    """Run an Access check; a Forbidden becomes a 403 page."""
    try:
        check()
    except Forbidden as exc:
        raise PageError(403, "Not allowed", str(exc)) from None


async def load_site(rt: Runtime, session: ConsoleSession, uid: str) -> Site:
    """The site, or a 404 page, also for sites outside the user's scope (indistinguishable)."""
    site = await rt.sites.find(uid) if session.access.sees(uid) else None
    if site is None:
        raise PageError(
            404,
            "Site not found",
            "There is no such site, or you do not have access to it.",
        )
    return site


def _notice(request: Request) -> str | None:
    return _NOTICES.get(request.query_params.get("done", ""))


def _site_form_values(form_fields: dict[str, str]) -> dict[str, str | None]:
    kind = form_fields["type"]
    return {
        "name": form_fields["name"],
        "type": kind,
        # A cloud site has no gateway; the field may still hold text from switching type.
        "gateway_host": (form_fields["gateway_host"] or None) if kind == "gateway" else None,
        "cpms_url": form_fields["cpms_url"] or None,
    }


def _out(rt: Runtime, site: Site) -> SiteOut:
    return site_out(site, rt.sites.ocpp_url(site))


async def _site_tab(
    request: Request,
    rt: Runtime,
    session: ConsoleSession,
    site: Site,
    tab: str,
    extra: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    live = rt.hub.live_for_site(site.uid)
    online = sum(1 for lc in live if lc.connected)
    if not live and site.type == "gateway":  # its chargers are on its box: as last reported
        online = sum(1 for c in await rt.chargers.of_site(site.uid) if c.connected)
    context: dict[str, Any] = {
        "site": _out(rt, site),
        "tab": tab,
        "online": online,
        "total": (await rt.chargers.counts()).get(site.uid, 0),
        "notice": _notice(request),
    }
    context.update(extra or {})
    return render(request, f"sites/{tab}.html", context, session=session, status=status)


# -- list and create --
@router.get("/sites")
async def sites_page(request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    query = request.query_params.get("q", "").strip()
    sites = session.access.visible(await rt.sites.all())
    if query:
        needle = query.lower()
        sites = [
            s
            for s in sites
            if any(
                needle in (value or "").lower()
                for value in (s.name, s.uid, s.gateway_host, s.cpms_url)
            )
        ]
    counts = await rt.chargers.counts()
    rows = [
        {
            "site": _out(rt, s),
            "chargers": counts.get(s.uid, 0),
            "online": sum(1 for lc in rt.hub.live_for_site(s.uid) if lc.connected),
        }
        for s in sites
    ]
    return render(
        request,
        "sites/list.html",
        {"rows": rows, "query": query, "notice": _notice(request)},
        session=session,
    )


@router.get("/sites/new")
async def new_site_page(request: Request, session: SessionDep) -> Response:
    require(session.access.require_site_creator)
    values = {"name": "", "type": "cloud", "gateway_host": "", "cpms_url": ""}
    return render(request, "sites/new.html", {"values": values, "errors": {}}, session=session)


@router.post("/sites")
async def create_site_form(request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    form = await checked_form(request, session)
    require(session.access.require_site_creator)
    fields = {k: field(form, k) for k in ("name", "type", "gateway_host", "cpms_url")}
    values = _site_form_values(fields)
    try:
        created = await rt.sites.create(
            fields["name"],
            fields["type"],
            gateway_host=values["gateway_host"],
            cpms_url=values["cpms_url"],
        )
    except ConfigError as exc:
        errors = form_errors(exc, fields)
    else:
        log.info("site=%s created by %s", created.uid, session.access.user.email)
        return RedirectResponse(f"/sites/{created.uid}?done=created", status_code=303)
    return render(
        request,
        "sites/new.html",
        {"values": fields, "errors": errors},
        session=session,
        status=422,
    )


# -- a site's tabs --
@router.get("/sites/{uid}")
async def site_home(uid: str, request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    await load_site(rt, session, uid)
    suffix = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"/sites/{uid}/control-hub{suffix}", status_code=303)


@router.get("/sites/{uid}/control-hub")
async def control_hub(uid: str, request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    site = await load_site(rt, session, uid)
    await rt.hub.flush_attempts()
    latest = await rt.store.attempts.of_site(uid, 1)
    shown = attempt_out(latest[0]) if latest else None
    return await _control_hub_tab(request, rt, session, site, shown, None)


async def _control_hub_tab(
    request: Request,
    rt: Runtime,
    session: ConsoleSession,
    site: Site,
    latest: AttemptOut | None,
    pairing: dict[str, Any] | None,
) -> Response:
    """The Control Hub: the OCPP URL and what it means, the latest attempt, a gateway site's
    box (and a pairing code just made)."""
    return await _site_tab(
        request,
        rt,
        session,
        site,
        "control-hub",
        {
            "latest": latest,
            "url": ocpp_url_facts(rt.sites.ocpp_url(site), site.uid),
            "public_url_set": rt.config.public_url is not None,
            "gateway": await rt.gateways.status(site.uid) if site.type == "gateway" else None,
            "pairing": pairing,
        },
    )


# -- a gateway site's box (issue 12): pairing and revocation, as the REST API does them --
@router.post("/sites/{uid}/gateway/pairing-code")
async def gateway_pairing_code(
    uid: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    await checked_form(request, session)
    site = await load_site(rt, session, uid)
    require(session.access.require_writer)
    if site.type != "gateway":
        raise PageError(409, "Not a gateway site", "Only a gateway site is paired with a box.")
    code = await rt.gateways.create_pairing_code(uid)
    command = code.command(str(request.base_url).rstrip("/"))
    pairing = {"code": code.code, "expires_at": code.expires_at, "command": command}
    return await _control_hub_tab(request, rt, session, site, None, pairing)


@router.post("/sites/{uid}/gateway/revoke")
async def gateway_revoke(
    uid: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    await checked_form(request, session)
    site = await load_site(rt, session, uid)
    require(session.access.require_writer)
    await rt.gateways.revoke(site.uid)
    log.info("site=%s gateway revoked by %s", site.uid, session.access.user.email)
    return RedirectResponse(f"/sites/{uid}/control-hub?done=revoked", status_code=303)


@router.get("/sites/{uid}/chargers")
async def chargers_tab(uid: str, request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    site = await load_site(rt, session, uid)
    chargers = [
        charger_out(c, rt.hub.live_state(uid, c.id), site) for c in await rt.chargers.of_site(uid)
    ]
    return await _site_tab(request, rt, session, site, "chargers", {"chargers": chargers})


@router.get("/sites/{uid}/events")
async def chargers_events(
    uid: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> StreamingResponse:
    site = await load_site(rt, session, uid)
    return event_stream_response(site_stream(rt, console_state(request).settings, site.uid))


@router.get("/sites/{uid}/connection-log")
async def connection_log_tab(
    uid: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    site = await load_site(rt, session, uid)
    await rt.hub.flush_attempts()
    attempts = [attempt_out(a) for a in await rt.store.attempts.of_site(uid, LOG_ROWS)]
    return await _site_tab(request, rt, session, site, "connection-log", {"attempts": attempts})


@router.get("/sites/{uid}/connection-log/events")
async def connection_log_events(
    uid: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> StreamingResponse:
    site = await load_site(rt, session, uid)
    settings = console_state(request).settings
    return event_stream_response(connection_log_stream(rt, settings, site.uid))


@router.get("/sites/{uid}/settings")
async def settings_tab(uid: str, request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    site = await load_site(rt, session, uid)
    require(session.access.require_writer)
    values = {
        "name": site.name,
        "type": site.type,
        "gateway_host": site.gateway_host or "",
        "cpms_url": site.cpms_url or "",
        "secondary_cpms_url": site.secondary_cpms_url or "",
        "secondary_rule": site.secondary_rule,
    }
    return await _site_tab(request, rt, session, site, "settings", {"values": values, "errors": {}})


@router.post("/sites/{uid}/settings")
async def save_settings(
    uid: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    form = await checked_form(request, session)
    site = await load_site(rt, session, uid)
    require(session.access.require_writer)
    fields = {k: field(form, k) for k in ("name", "type", "gateway_host", "cpms_url")}
    changes: dict[str, str | None] = _site_form_values(fields)
    for key in ("secondary_cpms_url", "secondary_rule"):
        fields[key] = field(form, key)
        if key in form:  # (a form from before these fields existed leaves them)
            changes[key] = fields[key] or (None if key == "secondary_cpms_url" else "read-only")
    try:
        await rt.sites.update(uid, changes)
    except ConfigError as exc:
        errors = form_errors(exc, fields)
    else:
        return RedirectResponse(f"/sites/{uid}/settings?done=saved", status_code=303)
    return await _site_tab(
        request, rt, session, site, "settings", {"values": fields, "errors": errors}, 422
    )


# -- delete --
@router.get("/sites/{uid}/delete")
async def delete_page(uid: str, request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    site = await load_site(rt, session, uid)
    require(session.access.require_writer)
    chargers = await rt.chargers.of_site(uid)
    return await _site_tab(request, rt, session, site, "delete", {"chargers": len(chargers)})


@router.post("/sites/{uid}/delete")
async def delete_site_form(
    uid: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    await checked_form(request, session)
    site = await load_site(rt, session, uid)
    require(session.access.require_writer)
    disconnected = await rt.sites.delete(site.uid)
    log.info(
        "site=%s deleted by %s (%d charger(s) disconnected)",
        site.uid,
        session.access.user.email,
        disconnected,
    )
    return RedirectResponse("/sites?done=deleted", status_code=303)


# -- attempts on unknown sites --
@router.get("/connection-log")
async def unknown_sites_log(request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    """Attempts whose site UID matches no site: a mistyped or outdated OCPP URL, or a
    deleted site. Only for users who see every site (these may be anybody's chargers)."""
    if session.access.restricted:
        raise PageError(403, "Not allowed", "Only users who see every site can read this log.")
    await rt.hub.flush_attempts()
    attempts = [attempt_out(a) for a in await rt.store.attempts.unknown_sites(200)]
    return render(request, "sites/unknown.html", {"attempts": attempts}, session=session)
