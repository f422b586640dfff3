"""The users pages (admins only): create, edit role and site access, reset a password,
delete. Nobody can delete themselves or change their own role, so at least one admin
always remains (the accounts service refuses to remove the last admin as well)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from harmone.errors import ConfigError, Conflict, NotFound
from harmone.security import MIN_PASSWORD_LENGTH
from harmone.services.accounts import UNCHANGED, Unchanged
from harmone.store.records import UserAccount
from harmone.web.console.auth import (
    ConsoleSession,
    PageError,
    SessionDep,
    checked_form,
    set_session_cookie,
)
from harmone.web.console.forms import FormErrors, field, form_errors
from harmone.web.console.render import render
from harmone.web.console.routes_sites import require
from harmone.web.console.state import console_state
from harmone.web.runtime import Runtime, RuntimeDep

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

_ROLES = ("admin", "operator", "viewer")
_USER_FIELDS = ("email", "password", "role", "sites")
_NOTICES = {
    "created": "User created.",
    "saved": "User saved.",
    "deleted": "User deleted. Their sessions and API tokens no longer work.",
}


async def _account(rt: Runtime, raw_id: str) -> UserAccount:
    try:
        return await rt.accounts.get_account(int(raw_id))
    except (ValueError, OverflowError, NotFound):  # OverflowError: beyond SQLite's INTEGER
        raise PageError(404, "User not found", "There is no such user.") from None


async def _site_names(rt: Runtime) -> dict[str, str]:
    return {s.uid: s.name for s in await rt.store.sites.all()}


def _access_fields(form: FormData) -> tuple[str, list[str]]:
    mode = field(form, "access")
    sites = [v.strip() for v in form.getlist("sites") if isinstance(v, str) and v.strip()]
    return mode, sites


async def _form_page(
    request: Request,
    rt: Runtime,
    session: ConsoleSession,
    *,
    account: UserAccount | None,
    values: dict[str, Any],
    errors: FormErrors,
    status: int = 200,
) -> Response:
    return render(
        request,
        "users/form.html",
        {
            "account": account,
            "values": values,
            "errors": errors,
            "sites": await _site_names(rt),
            "roles": _ROLES,
            "min_password": MIN_PASSWORD_LENGTH,
            "is_self": account is not None and account.user.id == session.access.user.id,
        },
        session=session,
        status=status,
    )


@router.get("/users")
async def users_page(request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    require(session.access.require_admin)
    return render(
        request,
        "users/list.html",
        {
            "accounts": await rt.accounts.list_accounts(),
            "sites": await _site_names(rt),
            "notice": _NOTICES.get(request.query_params.get("done", "")),
        },
        session=session,
    )


@router.get("/users/new")
async def new_user_page(request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    require(session.access.require_admin)
    values = {"email": "", "role": "operator", "access": "all", "sites": []}
    return await _form_page(request, rt, session, account=None, values=values, errors={})


@router.post("/users")
async def create_user_form(request: Request, rt: RuntimeDep, session: SessionDep) -> Response:
    form = await checked_form(request, session)
    require(session.access.require_admin)
    mode, sites = _access_fields(form)
    values: dict[str, Any] = {
        "email": field(form, "email"),
        "role": field(form, "role"),
        "access": mode,
        "sites": sites,
    }
    password = form.get("password")
    errors: FormErrors = {}
    if values["role"] not in _ROLES:
        errors["role"] = "Choose a role."
    limited = mode == "some" and values["role"] != "admin"
    if not errors:
        try:
            await rt.accounts.create_account(
                values["email"],
                password if isinstance(password, str) else "",
                values["role"],
                sites if limited else None,
            )
        except ConfigError as exc:
            errors = form_errors(exc, _USER_FIELDS)
        except Conflict as exc:
            errors = {"email": str(exc)[:1].upper() + str(exc)[1:]}
        else:
            return RedirectResponse("/users?done=created", status_code=303)
    return await _form_page(
        request, rt, session, account=None, values=values, errors=errors, status=422
    )


@router.get("/users/{user_id}")
async def edit_user_page(
    user_id: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    require(session.access.require_admin)
    account = await _account(rt, user_id)
    values = {
        "email": account.user.email,
        "role": account.user.role,
        "access": "all" if account.sites is None else "some",
        "sites": sorted(account.sites or ()),
    }
    return await _form_page(request, rt, session, account=account, values=values, errors={})


@router.post("/users/{user_id}")
async def save_user(
    user_id: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    form = await checked_form(request, session)
    require(session.access.require_admin)
    account = await _account(rt, user_id)
    is_self = account.user.id == session.access.user.id
    mode, sites = _access_fields(form)
    role = account.user.role if is_self else field(form, "role")
    values: dict[str, Any] = {
        "email": account.user.email,
        "role": role,
        "access": mode,
        "sites": sites,
    }
    errors: FormErrors = {}
    if role not in _ROLES:
        errors["role"] = "Choose a role."
    password = field(form, "password")
    new_password: str | Unchanged = password if password else UNCHANGED
    scope: list[str] | None = sites if mode == "some" and role != "admin" else None
    if not errors:
        try:
            await rt.accounts.update_account(
                account.user.id,
                role=role,
                sites=scope,
                password=new_password,
                acting=session.access.user,
            )
        except ConfigError as exc:
            errors = form_errors(exc, _USER_FIELDS)
        except Conflict as exc:
            errors = {"role": str(exc)[:1].upper() + str(exc)[1:]}
        else:
            response = RedirectResponse("/users?done=saved", status_code=303)
            if is_self and password:
                # A new password ends every session of the user, this one too: start afresh.
                lifetime = console_state(request).settings.session_lifetime
                set_session_cookie(
                    response, await rt.accounts.create_session(account.user.id, lifetime)
                )
            return response
    return await _form_page(
        request, rt, session, account=account, values=values, errors=errors, status=422
    )


@router.get("/users/{user_id}/delete")
async def delete_user_page(
    user_id: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    require(session.access.require_admin)
    account = await _account(rt, user_id)
    if account.user.id == session.access.user.id:
        raise PageError(409, "Not possible", "You cannot delete your own account.")
    return render(request, "users/delete.html", {"account": account}, session=session)


@router.post("/users/{user_id}/delete")
async def delete_user_form(
    user_id: str, request: Request, rt: RuntimeDep, session: SessionDep
) -> Response:
    await checked_form(request, session)
    require(session.access.require_admin)
    account = await _account(rt, user_id)
    if account.user.id == session.access.user.id:
        raise PageError(409, "Not possible", "You cannot delete your own account.")
    try:
        await rt.accounts.delete_user(account.user.id, acting=session.access.user)
    except Conflict as exc:
        raise PageError(409, "Not possible", str(exc)) from None
    log.info("user %s deleted by %s", account.user.email, session.access.user.email)
    return RedirectResponse("/users?done=deleted", status_code=303)
