"""The box's own page (`/box`, on a gateway box only): what an installer on the LAN checks —
the OCPP URL, chargers online, the link to the cloud and its backlog. It reads the box's own
database and link, so it works with no internet."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from starlette.responses import Response

from harmone.web.console.auth import PageError, SessionDep
from harmone.web.console.render import render
from harmone.web.runtime import RuntimeDep
from harmone.web.schemas import site_out

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)


@router.get("/box")
async def box_page(request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    box = rt.box
    ident = await rt.store.box.identity()
    if box is None or ident is None:
        raise PageError(404, "Not a gateway box", "This HARMON-E is not a paired gateway box.")
    site = await rt.sites.get(ident.site_uid)
    chargers = await rt.chargers.of_site(site.uid)
    online = sum(
        1
        for c in chargers
        if (live := rt.hub.live_state(site.uid, c.id)) is not None and live.connected
    )
    return render(
        request,
        "box.html",
        {
            "site": site_out(site, rt.sites.ocpp_url(site)),
            "online": online,
            "total": len(chargers),
            "link": box,
            "ident": ident,
            "backlog": await rt.store.box.backlog(),
        },
        session=session,
    )
