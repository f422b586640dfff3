"""REST API v1: charger passwords for HTTP Basic authentication (docs/relay.md).

A site with `charger_auth` admits only chargers that send `Authorization: Basic` with their
identity as user name and the password set here. Passwords are write-only: only an argon2id
hash is stored, and nothing in the API returns it; `password_set` on a charger says whether
one exists. A password is replaced by setting another (rotation).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, field_validator

from harmone.relay.admission import identity_problem
from harmone.security import CHARGER_PASSWORD_LENGTHS, charger_password_problem
from harmone.web.api import RuntimeDep, WriterDep, charger_out
from harmone.web.schemas import ChargerOut

__all__ = ["ChargerPasswordIn", "router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["charger authentication"])


class ChargerPasswordIn(BaseModel):
    # No whitespace stripping (unlike the other bodies): a password is taken exactly as sent.
    model_config = ConfigDict(extra="forbid")

    password: str = Field(
        description=f"{CHARGER_PASSWORD_LENGTHS[0]} to {CHARGER_PASSWORD_LENGTHS[1]} printable "
        "ASCII characters (OCPP BasicAuthPassword); the same must be configured in the charger"
    )

    @field_validator("password")
    @classmethod
    def _allowed(cls, value: str) -> str:
        problem = charger_password_problem(value)
        if problem:
            raise ValueError(problem)
        return value


@router.put("/sites/{uid}/chargers/{charger_id}/password", response_model=ChargerOut)
async def set_charger_password(
    uid: str, charger_id: str, body: ChargerPasswordIn, rt: RuntimeDep, _: WriterDep
) -> ChargerOut:
    """Set or replace a charger's HTTP Basic password (kept only as an argon2id hash).

    A charger that has not connected yet is added to the site, so that it can be prepared
    before it is installed. A connected charger keeps its connection; the new password is
    checked at its next handshake.
    """
    site = await rt.store.sites.get(uid)
    problem = identity_problem(charger_id)
    if problem:
        raise HTTPException(422, f"charger_id: not a charge point identity: {problem}")
    charger = await rt.store.chargers.set_password(uid, charger_id, body.password)
    rt.hub.charger_changed(uid, charger_id)
    return charger_out(charger, rt.hub.live_state(uid, charger_id), site)
