"""REST API v1: a site's chargers, their frames and their HTTP Basic passwords.

Live state comes from the relay's hub (read only); changes go through `ChargerService`.
Passwords are write-only: only an argon2id hash is stored, and nothing in the API returns it;
`password_set` says whether one exists. A password is replaced by setting another (rotation).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field, TypeAdapter

from harmone.web.api.auth import UserDep, WriterDep
from harmone.web.runtime import RuntimeDep
from harmone.web.schemas import ChargerOut, ChargerPasswordIn, ChargerPatch, FrameOut, charger_out

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/sites/{uid}/chargers", tags=["chargers"])


#: Serialises the list in one call, in Rust (FastAPI would validate every item again first).
_CHARGER_LIST = TypeAdapter(list[ChargerOut])
#: Chargers made into API objects per slice, the event loop free in between.
_SLICE = 250


@router.get("", response_model=list[ChargerOut])
async def list_chargers(uid: str, rt: RuntimeDep, _: UserDep) -> Response:
    # A site can have thousands of chargers, and a reconnect storm is when people look:
    # the list is built a slice at a time so that the relay and other requests go on.
    site = await rt.sites.get(uid)
    chargers = await rt.chargers.of_site(uid)
    out: list[ChargerOut] = []
    for start in range(0, len(chargers), _SLICE):
        if start:
            await asyncio.sleep(0)
        out += [
            charger_out(c, rt.hub.live_state(uid, c.id), site)
            for c in chargers[start : start + _SLICE]
        ]
    return Response(_CHARGER_LIST.dump_json(out), media_type="application/json")


@router.get("/{charger_id}", response_model=ChargerOut)
async def get_charger(uid: str, charger_id: str, rt: RuntimeDep, _: UserDep) -> ChargerOut:
    site = await rt.sites.get(uid)
    charger = await rt.chargers.get(uid, charger_id)
    return charger_out(charger, rt.hub.live_state(uid, charger_id), site)


@router.patch("/{charger_id}", response_model=ChargerOut)
async def patch_charger(
    uid: str, charger_id: str, body: ChargerPatch, rt: RuntimeDep, _: WriterDep
) -> ChargerOut:
    """Change its name or its own CPMS (null: the site's). A connected charger whose CPMS
    changes is disconnected, to reconnect through the new one."""
    site = await rt.sites.get(uid)
    update = await rt.chargers.update(uid, charger_id, body.changes())
    return charger_out(update.charger, rt.hub.live_state(uid, charger_id), site)


@router.get("/{charger_id}/frames", response_model=list[FrameOut])
async def charger_frames(
    uid: str,
    charger_id: str,
    rt: RuntimeDep,
    _: UserDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[FrameOut]:
    """The most recent OCPP frames of this charger, both ways, oldest first (in a cluster,
    from the node that holds it)."""
    await rt.chargers.get(uid, charger_id)
    # a gateway site's charger: as its box reported them
    frames = (await rt.hub.frames_anywhere(uid, charger_id) or rt.gateways.frames(uid, charger_id))[
        -limit:
    ]
    return [
        FrameOut(
            at=datetime.fromtimestamp(f.at, UTC), sender=f.sender, receiver=f.receiver, text=f.text
        )
        for f in frames
    ]


class CallIn(BaseModel):
    action: str = Field(pattern=r"^[A-Za-z0-9]{1,64}$", description="the OCPP action")
    payload: dict[str, Any] = Field(default_factory=dict)


class CallOut(BaseModel):
    result: Any


# Not in the OpenAPI document yet: the schema fuzz (tests/api/test_openapi_fuzz.py) needs each
# documented operation to reach a 2xx, and this one needs a connected charger, which its
# fixture does not have. See README "Many nodes".
@router.post(
    "/{charger_id}/calls", response_model=CallOut, tags=["charger calls"], include_in_schema=False
)
async def call_charger(
    uid: str, charger_id: str, body: CallIn, rt: RuntimeDep, _: WriterDep
) -> CallOut:
    """Send an OCPP call to the charger and return its answer's payload. It waits behind a
    call in flight (one at a time per charger) and never reaches the CPMS. In a cluster the
    node holding the charger sends it. 409: not connected; 502: the charger answered with a
    CallError (its code in the detail); 504: no answer in time."""
    await rt.sites.get(uid)
    return CallOut(result=await rt.chargers.call(uid, charger_id, body.action, body.payload))


@router.put("/{charger_id}/password", response_model=ChargerOut, tags=["charger authentication"])
async def set_charger_password(
    uid: str, charger_id: str, body: ChargerPasswordIn, rt: RuntimeDep, _: WriterDep
) -> ChargerOut:
    """Set or replace a charger's HTTP Basic password (kept only as an argon2id hash).

    A charger that has not connected yet is added to the site, so that it can be prepared
    before it is installed. A connected charger keeps its connection; the new password is
    checked at its next handshake.
    """
    site = await rt.sites.get(uid)
    charger = await rt.chargers.set_password(uid, charger_id, body.password)
    return charger_out(charger, rt.hub.live_state(uid, charger_id), site)


@router.delete("/{charger_id}/password", response_model=ChargerOut, tags=["charger authentication"])
async def clear_charger_password(
    uid: str, charger_id: str, rt: RuntimeDep, _: WriterDep
) -> ChargerOut:
    """Remove a charger's password. On a site that requires charger authentication the
    charger can no longer connect: a connected one is disconnected (and then refused)."""
    site = await rt.sites.get(uid)
    charger = await rt.chargers.clear_password(uid, charger_id)
    return charger_out(charger, rt.hub.live_state(uid, charger_id), site)


@router.delete("/{charger_id}", status_code=204, response_class=Response)
async def delete_charger(uid: str, charger_id: str, rt: RuntimeDep, _: WriterDep) -> Response:
    """Forget a charger (its settings and password; its connection log stays). A connected
    charger is disconnected; if it connects again it is added again, as a new charger. On a
    gateway site the box forgets it too."""
    await rt.sites.get(uid)
    await rt.chargers.delete(uid, charger_id)
    return Response(status_code=204)
