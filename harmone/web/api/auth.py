"""Who is calling the REST API: the bearer token's user, their role and their sites.

Every route with a `{uid}` path parameter is checked in `current_access`, so a user limited
to some sites gets 404 for any other site on every endpoint, including routers added later.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from harmone.store.records import User
from harmone.web.access import Access
from harmone.web.runtime import RuntimeDep

__all__ = ["AccessDep", "AdminDep", "SiteCreatorDep", "UserDep", "WriterDep", "current_access"]

log = logging.getLogger(__name__)


async def current_access(request: Request, rt: RuntimeDep) -> Access:
    """The token's user and the sites they may see."""
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
    access.require_writer()
    return access.user


WriterDep = Annotated[User, Depends(require_writer)]


def require_admin(access: AccessDep) -> Access:
    access.require_admin()
    return access


AdminDep = Annotated[Access, Depends(require_admin)]


def require_site_creator(access: AccessDep) -> Access:
    access.require_site_creator()
    return access


SiteCreatorDep = Annotated[Access, Depends(require_site_creator)]
