"""REST API v1: users, their roles and the sites they are limited to (admins only)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from harmone.errors import InvalidFields
from harmone.security import MIN_PASSWORD_LENGTH
from harmone.services.accounts import UNCHANGED, Unchanged
from harmone.store.records import UserAccount
from harmone.web.api.auth import AdminDep
from harmone.web.runtime import RuntimeDep

__all__ = ["UserIn", "UserOut", "UserPatch", "router", "user_out"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/users", tags=["users"])

RoleName = Literal["admin", "operator", "viewer"]
_SITES_DOC = (
    "UIDs of the only sites this user may see; null: every site (admins always see every site)"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class UserIn(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {"email": "operator@example.com", "password": "a long passphrase", "sites": None}
            ]
        },
    )

    email: str = Field(
        min_length=3,
        max_length=320,
        # documented; the accounts service checks it and says what is wrong
        json_schema_extra={"pattern": r"^[^@\s]+@[^@\s]+$"},
    )
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=1024)
    role: RoleName = "operator"
    sites: list[str] | None = Field(default=None, description=_SITES_DOC)


class UserPatch(_Strict):
    role: RoleName | None = None
    sites: list[str] | None = Field(default=None, description=_SITES_DOC)
    password: str | None = Field(default=None, min_length=MIN_PASSWORD_LENGTH, max_length=1024)


class UserOut(BaseModel):
    id: int
    email: str
    role: RoleName
    sites: list[str] | None = Field(description=_SITES_DOC)
    created_at: datetime


def user_out(account: UserAccount) -> UserOut:
    user = account.user
    return UserOut(
        id=user.id,
        email=user.email,
        role=user.role,
        sites=None if account.sites is None else sorted(account.sites),
        created_at=user.created_at,
    )


@router.get("", response_model=list[UserOut])
async def list_users(rt: RuntimeDep, _: AdminDep) -> list[UserOut]:
    return [user_out(a) for a in await rt.accounts.list_accounts()]


@router.post("", status_code=201, response_model=UserOut)
async def create_user(body: UserIn, rt: RuntimeDep, _: AdminDep) -> UserOut:
    account = await rt.accounts.create_account(body.email, body.password, body.role, body.sites)
    return user_out(account)


#: A user id; the bounds keep ids SQLite's INTEGER cannot hold out of the store (422, not 500).
UserId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/{user_id}", response_model=UserOut)
async def get_user(user_id: UserId, rt: RuntimeDep, _: AdminDep) -> UserOut:
    return user_out(await rt.accounts.get_account(user_id))


@router.patch("/{user_id}", response_model=UserOut)
async def patch_user(user_id: UserId, body: UserPatch, rt: RuntimeDep, admin: AdminDep) -> UserOut:
    """Change any of role, sites (null: every site), password. A new password ends the
    user's console sessions."""
    fields = body.model_dump(exclude_unset=True)
    for name in ("role", "password"):
        if name in fields and fields[name] is None:
            raise InvalidFields({name: "must not be null"})
    role: str | Unchanged = fields.get("role", UNCHANGED)
    sites: list[str] | Unchanged | None = fields.get("sites", UNCHANGED)
    password: str | Unchanged = fields.get("password", UNCHANGED)
    account = await rt.accounts.update_account(
        user_id, role=role, sites=sites, password=password, acting=admin.user
    )
    return user_out(account)


@router.delete("/{user_id}", status_code=204, response_class=Response)
async def delete_user(user_id: UserId, rt: RuntimeDep, admin: AdminDep) -> Response:
    """Delete a user with their API tokens and console sessions (not yourself)."""
    await rt.accounts.delete_user(user_id, acting=admin.user)
    return Response(status_code=204)
