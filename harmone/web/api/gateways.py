"""REST API v1: gateway sites' boxes (issue 12) — pairing codes, health, revocation — and the
boxes' link (a WebSocket at `LINK_PATH`, opened by the box, never by the cloud).

Rules and effects live in `GatewayService`; this maps requests to it. A box pairs over the
link itself (`Authorization: Pairing CODE`): the cloud answers with the box's credential and
closes; the box then opens its link with `Authorization: Bearer CREDENTIAL`. A refused code or
credential gets a `refused` message saying why, then close code 4401.
"""

from __future__ import annotations

import logging
from datetime import datetime

from fastapi import APIRouter, Request, WebSocket
from pydantic import BaseModel, ConfigDict, Field

from harmone.errors import AuthError
from harmone.gateway.protocol import LINK_PATH, REFUSED_CLOSE, encode
from harmone.web.api.auth import UserDep, WriterDep
from harmone.web.runtime import RuntimeDep, get_runtime

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["gateways"])


class PairingCodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PairingCodeOut(BaseModel):
    code: str = Field(description="one-time pairing code")
    expires_at: datetime
    command: str = Field(description="the one line to run on the box")


class GatewayOut(BaseModel):
    paired: bool
    gateway_id: str | None
    online: bool
    revoked: bool
    last_contact: datetime | None
    software_version: str | None
    fingerprint: str | None = Field(description="SHA-256 of the box's TLS certificate")
    started_at: datetime | None
    uptime_seconds: float | None
    clock_offset_seconds: float | None = Field(description="box clock minus cloud clock")
    outbox_backlog: int
    config_version: int = Field(description="the newest configuration version sent")
    config_version_applied: int
    chargers_stale: bool = Field(
        description="the site's chargers are as last reported by a box that is offline now"
    )


def _cloud_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.post("/sites/{uid}/gateway/pairing-code", status_code=201, response_model=PairingCodeOut)
async def create_pairing_code(
    uid: str,
    request: Request,
    rt: RuntimeDep,
    _: WriterDep,
    body: PairingCodeIn | None = None,
) -> PairingCodeOut:
    """A one-time code (valid 30 minutes) and the command that pairs a box with this
    gateway site. Pairing a new box revokes the site's earlier one."""
    code = await rt.gateways.create_pairing_code(uid)
    command = code.command(_cloud_url(request))
    return PairingCodeOut(code=code.code, expires_at=code.expires_at, command=command)


@router.get("/sites/{uid}/gateway", response_model=GatewayOut)
async def gateway_status(uid: str, rt: RuntimeDep, _: UserDep) -> GatewayOut:
    """The site's box: online or not, last contact, version, uptime, clock offset, outbox
    backlog, configuration versions."""
    s = await rt.gateways.status(uid)
    uptime = None
    if s.online and s.started_at is not None:
        uptime = max(0.0, (datetime.now(s.started_at.tzinfo) - s.started_at).total_seconds())
    return GatewayOut(
        paired=s.paired,
        gateway_id=s.gateway_id,
        online=s.online,
        revoked=s.revoked,
        last_contact=s.last_contact,
        software_version=s.software_version,
        fingerprint=s.fingerprint,
        started_at=s.started_at,
        uptime_seconds=uptime,
        clock_offset_seconds=s.clock_offset,
        outbox_backlog=s.backlog,
        config_version=s.config_version,
        config_version_applied=s.config_applied,
        chargers_stale=s.chargers_stale,
    )


@router.delete("/sites/{uid}/gateway")
async def revoke_gateway(uid: str, rt: RuntimeDep, _: WriterDep) -> dict[str, list[str]]:
    """Revoke the site's box: its link is closed and it is refused from now on."""
    return {"revoked": await rt.gateways.revoke(uid)}


def _authorization(websocket: WebSocket) -> str:
    # uvicorn's sans-I/O WebSocket protocol hands header names over as the client spelled
    # them (ASGI says lower-case), so Starlette's case-sensitive lookup would miss them.
    for name, value in websocket.scope.get("headers", ()):
        if name.lower() == b"authorization":
            return bytes(value).decode("latin-1")
    return ""


@router.websocket(LINK_PATH.removeprefix("/api/v1"))
async def gateway_link(websocket: WebSocket) -> None:
    rt = get_runtime(websocket)  # type: ignore[arg-type]
    header = _authorization(websocket)
    scheme, _, value = header.partition(" ")
    try:
        if scheme.lower() == "pairing":
            paired = await rt.gateways.pair(value.strip())
            await websocket.accept()
            snapshot = await rt.gateways.snapshot(paired.site_uid)
            await websocket.send_text(
                encode(
                    "paired",
                    gateway_id=paired.gateway_id,
                    credential=paired.credential,
                    site_uid=paired.site_uid,
                    snapshot=snapshot,
                )
            )
            await websocket.close(1000, "paired")
            return
        gateway = await rt.gateways.authenticate(header)
    except AuthError as exc:
        # Accepted, told why, closed: a WebSocket client sees a reason it can show (an HTTP
        # refusal's body is not something every client surfaces).
        log.warning("gateway link refused: %s", exc)
        await websocket.accept()
        await websocket.send_text(encode("refused", detail=str(exc)))
        await websocket.close(REFUSED_CLOSE, "refused")
        return
    await websocket.accept()
    await rt.gateways.serve_link(gateway, websocket)
