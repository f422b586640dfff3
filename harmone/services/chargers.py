"""Chargers: changing one's settings and its HTTP Basic password, with every effect on its
live connection.

The REST API and the console go through `ChargerService`. What a change does:

* a charger's own CPMS URL changed: if it is connected to another CPMS, it is closed so that
  it reconnects through the new one (the caller learns whether, to say so);
* a password set or replaced: a connected charger keeps its connection, the new password is
  checked at its next handshake (rotation must not drop a charging car);
* a password removed on a site that requires charger authentication: a connected charger is
  closed, since it could not connect again (removing the password revokes its access);
* a charger deleted: it is forgotten (with its settings and password) and, if connected,
  closed (code 1000, "charger deleted"); it is added again if it connects again, like any
  charger connecting for the first time;
* every watcher (`ChangeWatcher`) is told after the database write, before any link closes.

Errors are the package's own: InvalidFields (naming the field), NotFound.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harmone.domain import Charger
from harmone.errors import InvalidFields
from harmone.relay.admission import identity_problem
from harmone.security import charger_password_problem
from harmone.services.live_links import ChangeWatcher, LiveLinks, close_and_wait
from harmone.services.sites import RECONNECT, reconnect_if_moved
from harmone.store.store import Store

__all__ = ["ChargerService", "ChargerUpdate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChargerUpdate:
    charger: Charger
    #: It was connected through another CPMS and was closed, to come back through its new one.
    reconnected: bool


class ChargerService:
    """Chargers and their effects on the relay (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        relay: LiveLinks,
        *,
        watchers: Sequence[ChangeWatcher] = (),
        close_grace: float = 5.0,
    ) -> None:
        self._close_grace = close_grace
        self._store = store
        self._relay = relay
        self._watchers = tuple(watchers)

    async def get(self, site_uid: str, charger_id: str) -> Charger:
        """The charger; NotFound for an unknown site or charger."""
        return await self._store.chargers.get(site_uid, charger_id)

    async def find(self, site_uid: str, charger_id: str) -> Charger | None:
        return await self._store.chargers.find(site_uid, charger_id)

    async def call(self, site_uid: str, charger_id: str, action: str, payload: Any) -> Any:
        """Send an OCPP call to the charger (NotFound if unknown, ChargerNotConnected if no
        node holds it, CallErrorReceived, CallTimeout) and return its answer's payload."""
        await self._store.chargers.get(site_uid, charger_id)
        return await self._relay.call(site_uid, charger_id, action, payload)

    async def counts(self) -> dict[str, int]:
        """How many chargers each site has, by site UID."""
        return await self._store.chargers.counts()

    async def of_site(self, site_uid: str) -> list[Charger]:
        """The chargers of a site, by identity (none for an unknown site)."""
        return await self._store.chargers.of_site(site_uid)

    async def update(
        self, site_uid: str, charger_id: str, changes: Mapping[str, object]
    ) -> ChargerUpdate:
        """The charger with `changes` (its name, its own CPMS; None: the site's) applied;
        NotFound, InvalidFields."""
        site = await self._store.sites.get(site_uid)
        if not changes:
            return ChargerUpdate(await self._store.chargers.get(site_uid, charger_id), False)
        charger = await self._store.chargers.update(site_uid, charger_id, **changes)
        self._tell(site_uid, charger_id)
        reconnected = False
        link = self._relay.link(site_uid, charger_id)
        if link is not None and ("cpms_url" in changes or "secondary_cpms_url" in changes):
            effective = charger.cpms_url or site.cpms_url
            secondary = charger.secondary_cpms_url or site.secondary_cpms_url
            reconnected = await reconnect_if_moved(link, site_uid, charger_id, effective, secondary)
        return ChargerUpdate(charger, reconnected)

    async def set_password(self, site_uid: str, charger_id: str, password: str) -> Charger:
        """Set or replace the charger's HTTP Basic password (only its argon2id hash is kept).

        A charger that never connected is added to the site, so that it can be prepared
        before it is installed. NotFound for an unknown site; InvalidFields for an identity
        a charger could not connect with, or a password OCPP does not allow.
        """
        await self._store.sites.get(site_uid)
        problem = identity_problem(charger_id)
        if problem:
            raise InvalidFields({"charger_id": f"not a charge point identity: {problem}"})
        problem = charger_password_problem(password)
        if problem:
            raise InvalidFields({"password": problem})
        charger = await self._store.chargers.set_password(site_uid, charger_id, password)
        self._tell(site_uid, charger_id)
        return charger

    async def clear_password(self, site_uid: str, charger_id: str) -> Charger:
        """Remove the charger's password; on a site that requires charger authentication a
        connected charger is closed (it is refused when it reconnects). NotFound."""
        site = await self._store.sites.get(site_uid)
        charger = await self._store.chargers.clear_password(site_uid, charger_id)
        self._tell(site_uid, charger_id)
        link = self._relay.link(site_uid, charger_id)
        if site.charger_auth and link is not None:
            log.info("site=%s charger=%s password removed: disconnecting it", site_uid, charger_id)
            await link.close(RECONNECT, "its password was removed")
        return charger

    async def delete(self, site_uid: str, charger_id: str) -> bool:
        """Close the charger's connection, then forget it; whether it was connected.
        NotFound."""
        await self._store.chargers.get(site_uid, charger_id)
        link = self._relay.link(site_uid, charger_id)
        if link is not None:
            log.info("site=%s charger=%s deleted: disconnecting it", site_uid, charger_id)
            await close_and_wait([link], 1000, "charger deleted", self._close_grace)
        # closed first: the state its disconnection wrote must not add it again
        self._relay.forget(site_uid, charger_id)
        await self._store.chargers.delete(site_uid, charger_id)
        self._tell(site_uid, charger_id)
        return link is not None

    def _tell(self, site_uid: str, charger_id: str) -> None:
        for watcher in self._watchers:
            watcher.charger_changed(site_uid, charger_id)
