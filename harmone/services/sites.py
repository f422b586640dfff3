"""Sites: creating, changing and deleting one, with every effect on live connections.

The REST API, the console and any other caller go through `SiteService`; none of them touches
the relay's links. The rules of a site's fields are the domain's (`harmone.domain`, applied
by the store); this module owns what a change *does*:

* a new CPMS URL reconnects the connected chargers whose CPMS it changes (an open CPMS link
  cannot be moved; chargers reconnect within seconds, through the new CPMS);
* switching the offline mode applies at once to the open links;
* switching charger authentication on reconnects every connected charger, so that each one
  comes back through the credential check now rather than at its next reconnection;
* deleting a site deletes it first and then closes its chargers, so that a charger that
  reconnects at once is refused ("no such site") instead of admitted into a vanishing site;
* every watcher (`ChangeWatcher`) is told after the database write and before any link is
  closed, so that a charger reconnecting at once meets the new settings.

Errors are the package's own: InvalidFields (naming the fields), NotFound.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from harmone.domain import Site
from harmone.services.live_links import (
    ChangeWatcher,
    LiveLinks,
    RelayedCharger,
    close_and_wait,
)
from harmone.store.store import Store

__all__ = ["RECONNECT", "SiteService", "ocpp_url", "reconnect_if_moved"]

log = logging.getLogger(__name__)

#: WebSocket close code "service restart": the charger should reconnect at once.
RECONNECT = 1012


def ocpp_url(site: Site, cloud_base_url: str) -> str:
    """The one URL every charger of the site is given, exactly as the Control Hub shows it:
    `wss://{gateway_host}/{uid}` for a gateway site, `{cloud_base_url}/{uid}` otherwise."""
    if site.type == "gateway":
        return f"wss://{site.gateway_host}/{site.uid}"
    return f"{cloud_base_url}/{site.uid}"


class SiteService:
    """Sites and their effects on the relay (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        relay: LiveLinks,
        cloud_base_url: str,
        *,
        watchers: Sequence[ChangeWatcher] = (),
        close_grace: float = 5.0,
    ) -> None:
        self._store = store
        self._relay = relay
        #: The URL chargers of cloud sites use, without the site UID.
        self.cloud_base_url = cloud_base_url
        self._watchers = tuple(watchers)
        self._close_grace = close_grace

    def ocpp_url(self, site: Site) -> str:
        return ocpp_url(site, self.cloud_base_url)

    async def get(self, uid: str) -> Site:
        """The site `uid`; NotFound otherwise."""
        return await self._store.sites.get(uid)

    async def find(self, uid: str) -> Site | None:
        return await self._store.sites.find(uid)

    async def all(self) -> list[Site]:
        """Every site, oldest first."""
        return await self._store.sites.all()

    async def create(self, name: str, type: str, **fields: object) -> Site:
        """A new site from its settings; InvalidFields for input that breaks a rule of the
        domain. Its UID is fresh and unguessable (the store's)."""
        site = await self._store.sites.create(name, type, **fields)
        self._tell_site(site.uid)
        log.info("site=%s created (%s, %r)", site.uid, site.type, site.name)
        return site

    async def update(self, uid: str, changes: Mapping[str, object]) -> Site:
        """The site with `changes` applied, and their effects carried out on its connected
        chargers; NotFound, InvalidFields (the site as a whole is checked again)."""
        before = await self._store.sites.get(uid)
        if not changes:
            return before
        site = await self._store.sites.update(uid, **changes)
        self._tell_site(uid)
        if site.offline_mode != before.offline_mode:
            strict = site.offline_mode == "strict"
            for link in self._relay.links_for_site(uid):
                link.strict = strict
            log.info("site=%s offline mode now %s on the open links", uid, site.offline_mode)
        if site.secondary_rule != before.secondary_rule:
            for link in self._relay.links_for_site(uid):
                link.secondary_rule = site.secondary_rule
            log.info("site=%s secondary rule now %s on the open links", uid, site.secondary_rule)
        if site.charger_auth and not before.charger_auth:
            # Chargers connected before were never asked for credentials.
            for link in self._relay.links_for_site(uid):
                await link.close(RECONNECT, "the site now requires charger authentication")
            log.info("site=%s charger authentication on: its chargers were reconnected", uid)
        elif "cpms_url" in changes or "secondary_cpms_url" in changes:
            await self._reconnect_moved(site)
        return site

    async def delete(self, uid: str) -> int:
        """Delete a site with its chargers, then close its connected chargers (code 1000,
        "site deleted"); returns how many were connected. Its connection log stays.
        NotFound."""
        await self._store.sites.delete(uid)
        self._tell_site(uid)
        links = list(self._relay.links_for_site(uid))
        await close_and_wait(links, 1000, "site deleted", self._close_grace)
        log.info("site=%s deleted; %d connected charger(s) disconnected", uid, len(links))
        return len(links)

    async def _reconnect_moved(self, site: Site) -> None:
        """Close the connected chargers of `site` whose CPMS (or secondary CPMS) is no longer
        the one their link goes to (a charger with its own keeps it)."""
        for charger in await self._store.chargers.of_site(site.uid):
            link = self._relay.link(site.uid, charger.id)
            if link is not None:
                effective = charger.cpms_url or site.cpms_url
                secondary = charger.secondary_cpms_url or site.secondary_cpms_url
                await reconnect_if_moved(link, site.uid, charger.id, effective, secondary)

    def _tell_site(self, uid: str) -> None:
        for watcher in self._watchers:
            watcher.site_changed(uid)


async def reconnect_if_moved(
    link: RelayedCharger,
    site_uid: str,
    charger_id: str,
    cpms_url: str | None,
    secondary_url: str | None = None,
) -> bool:
    """Close `link` when it is not relayed to `cpms_url` (and mirrored to `secondary_url`);
    whether it was closed."""
    if link.cpms_url == cpms_url and link.secondary_url == secondary_url:
        return False
    log.info(
        "site=%s charger=%s CPMS changed to %s: reconnecting the charger",
        site_uid,
        charger_id,
        cpms_url if link.cpms_url != cpms_url else f"{cpms_url} (secondary {secondary_url})",
    )
    await link.close(RECONNECT, "CPMS changed; reconnect")
    return True
