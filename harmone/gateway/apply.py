"""A configuration snapshot from the cloud, put in force on the box through its services.

The site keeps the cloud's UID (its OCPP URL is the one the cloud's Control Hub shows); a
change to an existing site or charger goes through `SiteService` / `ChargerService`, so its
effects on connected chargers are the same as in the cloud (a new CPMS reconnects them, the
offline mode switches on open links). Password hashes are copied as they are (the box never
sees a password; one removed in the cloud is removed through `ChargerService`, which
disconnects the charger on a site with charger authentication); load management is
configured through its service.

A charger the previous snapshot listed and this one does not was deleted in the cloud: it is
deleted through `ChargerService` (a connected one is disconnected, as the cloud does). Other
chargers the cloud does not list are left alone: the box may know chargers the cloud has not
heard of yet (first connected to the box, not yet reported).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from harmone.domain import ChargerSettings, SiteSettings
from harmone.web.runtime import Runtime

__all__ = ["apply_snapshot", "site_uid_of"]

log = logging.getLogger(__name__)


def site_uid_of(snapshot: Mapping[str, Any]) -> str:
    return str(snapshot["site"]["uid"])


def _charger_ids(snapshot: Mapping[str, Any] | None) -> set[str]:
    return {str(c["id"]) for c in (snapshot or {}).get("chargers") or ()}


async def apply_snapshot(
    rt: Runtime, snapshot: Mapping[str, Any], previous: Mapping[str, Any] | None = None
) -> None:
    """Put `snapshot` in force; `previous`: the one in force before (None at start-up)."""
    site_in = snapshot["site"]
    uid = site_uid_of(snapshot)
    fields = {k: site_in[k] for k in SiteSettings.model_fields if k in site_in}
    site = await rt.sites.find(uid)
    if site is None:
        await rt.store.box.adopt_site(uid, fields)
        rt.hub.site_changed(uid)
        log.info("site=%s taken over from the cloud", uid)
    else:
        changes = {k: v for k, v in fields.items() if getattr(site, k) != v}
        if changes:
            await rt.sites.update(uid, changes)
    hashes = await rt.store.box.password_hashes(uid)
    for c in snapshot.get("chargers") or ():
        cid = str(c["id"])
        charger = await rt.chargers.find(uid, cid)
        if charger is None:
            charger = await rt.store.chargers.register(uid, cid)
        changes = {
            k: c.get(k) for k in ChargerSettings.model_fields if getattr(charger, k) != c.get(k)
        }
        if changes:
            await rt.chargers.update(uid, cid, changes)
        wanted = c.get("password_hash")
        if hashes.get(cid) != wanted:
            if wanted is None:
                # removed in the cloud: the service's effect too (a connected charger of a
                # site with charger authentication is disconnected)
                await rt.chargers.clear_password(uid, cid)
            else:
                await rt.store.box.set_password_hash(uid, cid, wanted)
                rt.hub.charger_changed(uid, cid)
    for cid in sorted(_charger_ids(previous) - _charger_ids(snapshot)):
        if await rt.chargers.find(uid, cid) is not None:
            connected = await rt.chargers.delete(uid, cid)
            await rt.store.box.enqueue_charger_gone(uid, cid)
            log.info(
                "site=%s charger=%s deleted in the cloud (was connected: %s)", uid, cid, connected
            )
    lm = snapshot.get("load_management")
    if lm is not None and lm != await rt.store.loadconfig.get(uid):
        await rt.loadmgmt.configure(uid, lm)
        log.info("site=%s load management configuration from the cloud in force", uid)
