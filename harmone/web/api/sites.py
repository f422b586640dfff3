"""REST API v1: sites (see the shared contract). Their rules and effects: `SiteService`."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response

from harmone.web.api.auth import AccessDep, SiteCreatorDep, UserDep, WriterDep
from harmone.web.runtime import RuntimeDep
from harmone.web.schemas import SiteIn, SiteOut, SitePatch, site_out

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["sites"])


@router.post("/sites", status_code=201, response_model=SiteOut)
async def create_site(body: SiteIn, rt: RuntimeDep, access: SiteCreatorDep) -> SiteOut:
    site = await rt.sites.create(**body.model_dump())
    log.info("site=%s created by %s", site.uid, access.user.email)
    return site_out(site, rt.sites.ocpp_url(site))


@router.get("/sites", response_model=list[SiteOut])
async def list_sites(rt: RuntimeDep, access: AccessDep) -> list[SiteOut]:
    """The sites this user may see (a user limited to some sites sees only those)."""
    return [site_out(s, rt.sites.ocpp_url(s)) for s in access.visible(await rt.sites.all())]


@router.get("/sites/{uid}", response_model=SiteOut)
async def get_site(uid: str, rt: RuntimeDep, _: UserDep) -> SiteOut:
    site = await rt.sites.get(uid)
    return site_out(site, rt.sites.ocpp_url(site))


@router.patch("/sites/{uid}", response_model=SiteOut)
async def patch_site(uid: str, body: SitePatch, rt: RuntimeDep, _: WriterDep) -> SiteOut:
    """Change any writable field. A new CPMS reconnects the chargers it concerns; switching
    charger authentication on reconnects every connected charger of the site."""
    site = await rt.sites.update(uid, body.changes())
    return site_out(site, rt.sites.ocpp_url(site))


@router.delete(
    "/sites/{uid}",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "deleted; its connected chargers were disconnected"}},
)
async def delete_site(uid: str, rt: RuntimeDep, _: WriterDep) -> Response:
    """Delete a site and its chargers (connected ones are disconnected with code 1000);
    the site's connection log is kept."""
    await rt.sites.delete(uid)
    return Response(status_code=204)
