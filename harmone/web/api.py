"""REST API v1: sites, chargers, connection log (see shared contract)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status

from harmone.errors import ConfigError
from harmone.relay.state import LiveCharger
from harmone.store.records import Attempt, Charger, Connector, Site, User
from harmone.web.access import Access, Forbidden
from harmone.web.app import HarmoneApp, Runtime
from harmone.web.schemas import (
    AttemptOut,
    ChargerOut,
    ChargerPatch,
    ConnectorOut,
    FrameOut,
    SiteIn,
    SiteOut,
    SitePatch,
)

__all__ = [
    "AccessDep",
    "AdminDep",
    "RuntimeDep",
    "UserDep",
    "WriterDep",
    "attempt_out",
    "charger_out",
    "delete_site_and_disconnect",
    "ocpp_url",
    "reconnect_if_cpms_changed",
    "router",
    "site_out",
]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1")


def get_runtime(request: Request) -> Runtime:
    app: HarmoneApp = request.app.state.harmone
    if app.runtime is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "HARMON-E is starting")
    return app.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def current_access(request: Request, rt: RuntimeDep) -> Access:
    """The token's user and the sites they may see.

    Every route with a `{uid}` path parameter is checked here, so that a user limited to some
    sites gets 404 for any other site on every endpoint, including routers added later.
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            401,
            "missing API token: send 'Authorization: Bearer TOKEN' "
            "(create one with 'harmone token create')",
            headers={"WWW-Authenticate": "Bearer"},
        )
    user = await rt.accounts.user_for_token(token.strip())
    if user is None:
        raise HTTPException(
            401, "invalid or revoked API token", headers={"WWW-Authenticate": "Bearer"}
        )
    access = Access(user, None if user.role == "admin" else await rt.accounts.user_sites(user.id))
    uid = request.path_params.get("uid")
    if isinstance(uid, str):
        access.check_site(uid)
    return access


AccessDep = Annotated[Access, Depends(current_access)]


async def current_user(access: AccessDep) -> User:
    return access.user


UserDep = Annotated[User, Depends(current_user)]


def require_writer(access: AccessDep) -> User:
    try:
        access.require_writer()
    except Forbidden as exc:
        raise HTTPException(403, str(exc)) from None
    return access.user


WriterDep = Annotated[User, Depends(require_writer)]


def require_admin(access: AccessDep) -> Access:
    try:
        access.require_admin()
    except Forbidden as exc:
        raise HTTPException(403, str(exc)) from None
    return access


AdminDep = Annotated[Access, Depends(require_admin)]


def require_site_creator(access: AccessDep) -> Access:
    try:
        access.require_site_creator()
    except Forbidden as exc:
        raise HTTPException(403, str(exc)) from None
    return access


SiteCreatorDep = Annotated[Access, Depends(require_site_creator)]


@contextmanager
def _unprocessable() -> Iterator[None]:
    """Input the domain refuses (ConfigError, naming the field) becomes a 422, as a body that
    fails the schema does; the console shows the message next to that field."""
    try:
        yield
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None


def ocpp_url(site: Site, cloud_base_url: str) -> str:
    """The one URL every charger of the site is given, as the Control Hub shows it."""
    if site.type == "gateway":
        return f"wss://{site.gateway_host}/{site.uid}"
    return f"{cloud_base_url}/{site.uid}"


def site_out(site: Site, rt: Runtime) -> SiteOut:
    return SiteOut.model_construct(**dict(site), ocpp_url=ocpp_url(site, rt.cloud_base_url))


def _connector_out(c: Connector) -> ConnectorOut:
    return ConnectorOut(id=c.id, status=c.status, updated_at=c.updated_at)


def charger_out(charger: Charger, live: LiveCharger | None, site: Site) -> ChargerOut:
    """The stored charger, overlaid with the live state of this process (which is newer)."""
    effective = charger.cpms_url or site.cpms_url
    if live is None:
        return ChargerOut(
            id=charger.id,
            site_uid=charger.site_uid,
            name=charger.name,
            connected=charger.connected,
            ocpp_version=charger.ocpp_version,
            **dict(charger.identity),
            last_seen=charger.last_seen,
            cpms_url=charger.cpms_url,
            effective_cpms_url=effective,
            upstream_connected=charger.upstream_connected,
            upstream_error=None,
            connectors=[_connector_out(c) for c in charger.connectors],
            password_set=charger.password_set,
        )
    connectors = {c.id: _connector_out(c) for c in charger.connectors}
    for cid, (st, at) in live.connectors.items():
        connectors[cid] = ConnectorOut(id=cid, status=st, updated_at=at)
    return ChargerOut(
        id=charger.id,
        site_uid=charger.site_uid,
        name=charger.name,
        connected=live.connected,
        ocpp_version=live.ocpp_version or charger.ocpp_version,
        **dict(live.identity.over(charger.identity)),
        last_seen=live.last_seen or charger.last_seen,
        cpms_url=charger.cpms_url,
        effective_cpms_url=effective,
        upstream_connected=live.upstream_connected,
        upstream_error=live.upstream_error if live.connected and effective else None,
        remote_addr=live.remote_addr if live.connected else None,
        connected_since=live.connected_since if live.connected else None,
        connectors=[connectors[k] for k in sorted(connectors)],
        password_set=charger.password_set,
    )


def attempt_out(a: Attempt) -> AttemptOut:
    return AttemptOut(
        at=a.at,
        site_uid=a.site_uid,
        charge_point_id=a.charge_point_id,
        remote_addr=a.remote_addr,
        accepted=a.accepted,
        reason=a.reason,
        http_status=a.http_status,
        subprotocol=a.subprotocol,
        offered_subprotocols=list(a.offered_subprotocols),
    )


async def reconnect_if_cpms_changed(rt: Runtime, site: Site) -> None:
    """Connected chargers of `site` whose CPMS changed are closed so that they come back
    through the new one (an open CPMS link cannot be moved; chargers reconnect in seconds)."""
    for (site_uid, charger_id), link in list(rt.hub.links.items()):
        if site_uid != site.uid:
            continue
        stored = await rt.store.chargers.find(site.uid, charger_id)
        after = (stored.cpms_url if stored else None) or site.cpms_url
        if after != link.cpms_url:
            log.info(
                "site=%s charger=%s CPMS changed to %s: reconnecting the charger",
                site.uid,
                charger_id,
                after,
            )
            await link.close(1012, "CPMS changed; reconnect")


async def delete_site_and_disconnect(rt: Runtime, uid: str, grace: float = 5.0) -> int:
    """Delete a site with its chargers, then close its connected chargers; returns how many
    were connected. Its connection log stays.

    The site goes first: a closed charger that reconnects at once then finds no site and is
    refused (and logged), instead of being admitted again into a site about to vanish.
    """
    await rt.store.sites.delete(uid)
    rt.hub.site_changed(uid)
    links = [link for (site_uid, _), link in list(rt.hub.links.items()) if site_uid == uid]
    for link in links:
        await link.close(1000, "site deleted")
    if links:
        _, pending = await asyncio.wait(
            [asyncio.create_task(link.closed.wait()) for link in links], timeout=grace
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    log.info("site=%s deleted; %d connected charger(s) disconnected", uid, len(links))
    return len(links)


# -- sites --
@router.post("/sites", status_code=201, response_model=SiteOut)
async def create_site(body: SiteIn, rt: RuntimeDep, _: SiteCreatorDep) -> SiteOut:
    with _unprocessable():
        site = await rt.store.sites.create(**body.model_dump())
    rt.hub.site_changed(site.uid)
    log.info("site=%s created (%s, %r)", site.uid, site.type, site.name)
    return site_out(site, rt)


@router.get("/sites", response_model=list[SiteOut])
async def list_sites(rt: RuntimeDep, access: AccessDep) -> list[SiteOut]:
    """The sites this user may see (a user limited to some sites sees only those)."""
    return [site_out(s, rt) for s in access.visible(await rt.store.sites.all())]


@router.get("/sites/{uid}", response_model=SiteOut)
async def get_site(uid: str, rt: RuntimeDep, _: UserDep) -> SiteOut:
    return site_out(await rt.store.sites.get(uid), rt)


@router.patch("/sites/{uid}", response_model=SiteOut)
async def patch_site(uid: str, body: SitePatch, rt: RuntimeDep, _: WriterDep) -> SiteOut:
    site = await rt.store.sites.get(uid)
    fields = body.changes()
    with _unprocessable():
        updated = await rt.store.sites.update(uid, **fields) if fields else site
    rt.hub.site_changed(uid)
    if "offline_mode" in fields:
        for key, link in rt.hub.links.items():
            if key[0] == uid:
                link.strict = updated.offline_mode == "strict"
    if "cpms_url" in fields:
        await reconnect_if_cpms_changed(rt, updated)
    if updated.charger_auth and not site.charger_auth:
        # Chargers connected before were never asked for credentials: they come back
        # through the check now, not whenever they happen to reconnect.
        for (site_uid, charger_id), link in list(rt.hub.links.items()):
            if site_uid == uid:
                log.info(
                    "site=%s charger=%s reconnecting: authentication now required", uid, charger_id
                )
                await link.close(1012, "the site now requires charger authentication")
    return site_out(updated, rt)


@router.delete(
    "/sites/{uid}",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "deleted; its connected chargers were disconnected"}},
)
async def delete_site(uid: str, rt: RuntimeDep, _: WriterDep) -> Response:
    """Delete a site and its chargers (connected ones are disconnected with code 1000);
    the site's connection log is kept."""
    await delete_site_and_disconnect(rt, uid)
    return Response(status_code=204)


# -- chargers --
@router.get("/sites/{uid}/chargers", response_model=list[ChargerOut])
async def list_chargers(uid: str, rt: RuntimeDep, _: UserDep) -> list[ChargerOut]:
    site = await rt.store.sites.get(uid)
    return [
        charger_out(c, rt.hub.live_state(uid, c.id), site)
        for c in await rt.store.chargers.of_site(uid)
    ]


@router.get("/sites/{uid}/chargers/{charger_id}", response_model=ChargerOut)
async def get_charger(uid: str, charger_id: str, rt: RuntimeDep, _: UserDep) -> ChargerOut:
    site = await rt.store.sites.get(uid)
    charger = await rt.store.chargers.get(uid, charger_id)
    return charger_out(charger, rt.hub.live_state(uid, charger_id), site)


@router.patch("/sites/{uid}/chargers/{charger_id}", response_model=ChargerOut)
async def patch_charger(
    uid: str, charger_id: str, body: ChargerPatch, rt: RuntimeDep, _: WriterDep
) -> ChargerOut:
    site = await rt.store.sites.get(uid)
    charger = await rt.store.chargers.get(uid, charger_id)
    fields = body.changes()
    if fields:
        with _unprocessable():
            charger = await rt.store.chargers.update(uid, charger_id, **fields)
        rt.hub.charger_changed(uid, charger_id)
    if "cpms_url" in fields:
        await reconnect_if_cpms_changed(rt, site)
    return charger_out(charger, rt.hub.live_state(uid, charger_id), site)


@router.get("/sites/{uid}/chargers/{charger_id}/frames", response_model=list[FrameOut])
async def charger_frames(
    uid: str,
    charger_id: str,
    rt: RuntimeDep,
    _: UserDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[FrameOut]:
    """The most recent OCPP frames of this charger, both ways, oldest first."""
    await rt.store.chargers.get(uid, charger_id)
    frames = rt.hub.frames(uid, charger_id)[-limit:]
    return [
        FrameOut(
            at=datetime.fromtimestamp(f.at, UTC), sender=f.sender, receiver=f.receiver, text=f.text
        )
        for f in frames
    ]


# -- connection log --
@router.get("/sites/{uid}/connection-log", response_model=list[AttemptOut])
async def connection_log(
    uid: str,
    rt: RuntimeDep,
    _: UserDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AttemptOut]:
    await rt.store.sites.get(uid)
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
        raise HTTPException(403, "only users who see every site may read this log")
    await rt.hub.flush_attempts()
    return [attempt_out(a) for a in await rt.store.attempts.unknown_sites(limit)]
