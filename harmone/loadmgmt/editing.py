"""The changes the console makes to a site's load-management configuration, one part at a time.

`ConfigEditing` is reached as `LoadManagementService.editing`. Each change is a pure function of
`edits` applied by `LoadManagementService.edit`: the whole result is validated by `parse_config`
(the REST API's rules) and stored, or nothing is. Every change takes the `version` of the
configuration it was prepared on and is refused with `Conflict` if the configuration changed
meanwhile. It also answers what a form needs to know before it changes anything: the version,
the warnings about the configuration in force (`advice`), and whether a Modbus meter answers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from harmone.errors import NotFound
from harmone.loadmgmt import edits
from harmone.loadmgmt.advice import ConfigAdvice, config_advice
from harmone.loadmgmt.config import SiteLoadConfig
from harmone.loadmgmt.meters import MeterConfig, MeterError, ModbusMeterReader

if TYPE_CHECKING:
    from harmone.loadmgmt.service import LoadManagementService

__all__ = ["ConfigAdvice", "ConfigEditing"]

log = logging.getLogger(__name__)

Json = dict[str, Any]


class ConfigEditing:
    """One site's configuration changed a part at a time (NotFound if it has none yet)."""

    def __init__(self, service: LoadManagementService) -> None:
        self._service = service

    # -- what a form is made on -------------------------------------------------------------
    def current(self, site_uid: str) -> Json:
        """The configuration in force as JSON (a copy)."""
        return self._service.config(site_uid).to_json()

    def version(self, site_uid: str) -> str:
        """The version of the configuration in force, for `version=` of the changes below."""
        return edits.config_version(self.current(site_uid))

    def advice(self, site_uid: str) -> tuple[ConfigAdvice, ...]:
        """What is valid and safe in the configuration in force but probably not meant."""
        return config_advice(self._service.config(site_uid))

    def node(self, site_uid: str, node_id: str) -> Json | None:
        """The node's configuration as JSON (its children included), or None."""
        return edits.find_node(self.current(site_uid), node_id)

    def node_paths(self, site_uid: str) -> dict[str, tuple[str, ...]]:
        """Node id -> the ids from the root down to it, in tree order."""
        return edits.node_paths(self.current(site_uid))

    async def probe_meter(self, node_id: str, raw: Mapping[str, Any]) -> str | None:
        """Read a Modbus meter once, before its configuration is saved: None if it answered,
        else why not, in words for people. ConfigError if the configuration itself is bad."""
        config = MeterConfig.from_dict({**raw, "node_id": node_id})
        reader = ModbusMeterReader(config, self._service.clock)
        try:
            await reader.read_once()
        except MeterError as exc:
            log.info("meter %s of node %s does not answer: %s", config.label, node_id, exc)
            return str(exc)
        finally:
            await reader.aclose()
        return None

    # -- changes ----------------------------------------------------------------------------
    async def set_up(self, site_uid: str, root: Mapping[str, Any]) -> SiteLoadConfig:
        """A first configuration: the grid connection alone (Conflict if there is one)."""
        return await self._service.create(site_uid, edits.new_config(root))

    async def add_node(
        self, site_uid: str, parent_id: str, node: Mapping[str, Any], version: str | None
    ) -> SiteLoadConfig:
        return await self._service.edit(
            site_uid, lambda raw: edits.add_node(raw, parent_id, node), version
        )

    async def update_node(
        self,
        site_uid: str,
        node_id: str,
        fields: Mapping[str, Any],
        parent_id: str | None,
        version: str | None,
    ) -> SiteLoadConfig:
        """The node's own fields, and its place when `parent_id` is given, in one change."""

        def change(raw: Json) -> Json:
            out = edits.update_node(raw, node_id, fields)
            return edits.move_node(out, node_id, parent_id) if parent_id else out

        return await self._service.edit(site_uid, change, version)

    async def remove_node(self, site_uid: str, node_id: str, version: str | None) -> SiteLoadConfig:
        return await self._service.edit(
            site_uid, lambda raw: edits.remove_node(raw, node_id), version
        )

    async def set_charger(
        self, site_uid: str, charger_id: str, settings: Mapping[str, Any], version: str | None
    ) -> SiteLoadConfig:
        return await self._service.edit(
            site_uid, lambda raw: edits.set_charger(raw, charger_id, settings), version
        )

    async def reset_charger(
        self, site_uid: str, charger_id: str, version: str | None
    ) -> SiteLoadConfig:
        return await self._service.edit(
            site_uid, lambda raw: edits.reset_charger(raw, charger_id), version
        )

    async def set_site_settings(
        self,
        site_uid: str,
        enabled: bool,
        policy: str,
        version: str | None,
        continuity_horizon_minutes: float | Literal["keep"] | None = "keep",
    ) -> SiteLoadConfig:
        horizon = continuity_horizon_minutes
        return await self._service.edit(
            site_uid,
            lambda raw: edits.set_site_settings(raw, enabled, policy, horizon),
            version,
        )

    def configured(self, site_uid: str) -> bool:
        try:
            self._service.config(site_uid)
        except NotFound:
            return False
        return True
