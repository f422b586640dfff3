"""What the load-management pages show, in words for people: a site's electrical tree with what
is in force at each node, its connectors and why each gets what it gets, a charging station's
settings and flags.

Everything is read from `LoadManagementService` (`config`, `status`); nothing here changes
anything. Templates get a `LoadView` and the formatting helpers of `fmt`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from harmone.errors import NotFound
from harmone.loadmgmt.service import LoadManagementService
from harmone.services.gateways import ReportedLoad
from harmone.web.console.loadmgmt_forms import LINE_PAIRS, ROTATIONS, charger_form_values
from harmone.web.runtime import Runtime

if TYPE_CHECKING:
    from harmone.loadmgmt.config import ChargerSettings, SiteLoadConfig
    from harmone.loadmgmt.editing import ConfigAdvice
    from harmone.loadmgmt.meters import MeterConfig, MeterStatus
    from harmone.loadmgmt.model import Node
    from harmone.loadmgmt.service import (
        ConnectorStatus,
        LimitOrigin,
        NodeStatus,
        SiteLoadStatus,
    )

__all__ = [
    "POLICIES",
    "ChargerLoadView",
    "Formatting",
    "LoadView",
    "NodeRow",
    "Reason",
    "charger_load_context",
    "fmt",
    "load_view",
    "site_load_view",
]

log = logging.getLogger(__name__)

POLICIES = {
    "equal_share": (
        "Equal share",
        "Every charging car gets the same current, as far as the fuses on its path allow.",
    ),
    "first_come_first_served": (
        "First come, first served",
        "The car that arrived first gets all it wants, then the next.",
    ),
    "priority": (
        "By priority",
        "Charging stations with a higher priority are served first; "
        "equal priorities share equally.",
    ),
}

#: reason kind -> (label, tone, what it means)
_REASONS = {
    "policy": ("Policy", "info", "its share under the site's policy"),
    "node_limit": ("Fuse limit", "busy", "a fuse on its path has no more room"),
    "suspended": ("Suspended", "bad", "a limit of 0 A on its path suspends charging"),
    "imbalance": ("Phase balance", "busy", "more would unbalance the phases beyond the limit"),
    "paused_below_min": (
        "Paused: below minimum",
        "busy",
        "its minimum current does not fit: paused at 0 A, it takes turns",
    ),
    "car_max": ("Car maximum", "muted", "the car takes no more"),
    "car_draw": (
        "Car draws less",
        "muted",
        "the car draws less than it was given: the rest went to others",
    ),
    "ignores_profile": ("Ignores its profile", "bad", "counted at what it draws"),
    "not_grantable": ("No step fits", "busy", "no grantable current lies between its min and max"),
    "capped_by_cpms": (
        "Capped by the CPMS",
        "info",
        "the CPMS's own charging profile allows no more",
    ),
    "flagged": ("Flagged", "bad", "the charging station does not obey its profile: see its page"),
    "meter_failed": (
        "Meter failed",
        "bad",
        "a meter on its path failed: its cluster is at its safety current",
    ),
}

_LIMIT_SOURCES = {
    "configured": "its own limit",
    "dynamic": "a dynamic limit",
    "safety": "its safety current: the meter failed",
}

_FLAG_HELP = {
    "does not answer": "HARMON-E counts it at its maximum current until it answers. Check that "
    "it is online and that its firmware supports OCPP smart charging. The flag clears by itself "
    "when it accepts a profile again.",
    "rejected": "It refuses HARMON-E's charging profiles, so HARMON-E counts what it draws "
    "instead of what it grants. Enable smart charging on the charger (OCPP 1.6: "
    "ChargeProfileMaxStackLevel at least 1 and the unit below in "
    "ChargingScheduleAllowedChargingRateUnit; 2.0.1: SmartChargingCtrlr enabled), or choose W "
    "below if it only takes power limits. The flag clears when it accepts a profile.",
    "draws more": "A car on it drew more than the limit HARMON-E set: the charger does not "
    "apply its profile. It is counted at its maximum current and a new car on it gets 0 A until "
    "a car is seen within its limit. Update the charger's firmware or check its smart-charging "
    "settings; until then, lower its maximum current here.",
}


@dataclass(frozen=True, slots=True)
class Reason:
    kind: str
    label: str
    tone: str
    meaning: str


class Formatting:
    """Formatting for the templates (as `fmt`: `fmt.amps(x)`)."""

    @staticmethod
    def amps(value: float | None) -> str:
        if value is None:
            return "–"
        return f"{value:.1f} A" if value != int(value) else f"{int(value)} A"

    @staticmethod
    def phases(values: Sequence[float] | None) -> str:
        if not values:
            return "–"
        if len(values) == 1:
            return Formatting.amps(values[0])
        return " · ".join(f"L{i} {v:.1f}" for i, v in enumerate(values, 1)) + " A"

    @staticmethod
    def policy(value: str) -> str:
        return POLICIES.get(value, (value, ""))[0]

    @staticmethod
    def reason(kind: str) -> Reason:
        label, tone, meaning = _REASONS.get(
            kind, (kind.replace("_", " ").capitalize(), "muted", "")
        )
        return Reason(kind, label, tone, meaning)

    @staticmethod
    def limit_source(source: str) -> str:
        return _LIMIT_SOURCES.get(source, source)

    @staticmethod
    def flag_help(flag: str) -> str:
        for start, help_text in _FLAG_HELP.items():
            if flag.startswith(start):
                return help_text
        return "HARMON-E counts it at what it may draw at most until this clears."

    @staticmethod
    def wiring(settings: ChargerSettings) -> str:
        wiring = settings.wiring_in_force
        lines = [p.name for p in settings.phase_rotation] if settings.phase_rotation else None
        if wiring.value == "L-N":
            return f"single-phase on {(lines or ['L1'])[0]}"
        if wiring.value == "L-L":
            return f"between {'-'.join(lines or ['L1', 'L2'])} ({settings.voltage:g} V)"
        rotation = "-".join(lines or ["L1", "L2", "L3"])
        return "three-phase" + ("" if rotation == "L1-L2-L3" else f", rotation {rotation}")


fmt = Formatting()


@dataclass(frozen=True, slots=True)
class NodeRow:
    """A node of the tree, flattened in tree order (for selects and indented lists)."""

    id: str
    depth: int
    parent: str | None
    node: Node


def _rows(node: Node, depth: int = 0, parent: str | None = None) -> Iterator[NodeRow]:
    yield NodeRow(node.id, depth, parent, node)
    for child in node.children:
        if isinstance(child, type(node)):  # a cluster, not a charging station
            yield from _rows(child, depth + 1, node.id)


def meter_kind(config: SiteLoadConfig, node: Node) -> str:
    """ "modbus" (read by HARMON-E), "pushed" (readings over the REST API) or "none"."""
    if node.id in config.meters:
        return "modbus"
    return "pushed" if node.metered else "none"


@dataclass(slots=True)
class LoadView:
    """A site's load management as the tab shows it; `config` None: not set up yet."""

    site_uid: str
    config: SiteLoadConfig | None
    status: SiteLoadStatus | None
    #: every charging station the site knows (stored, configured or seen by load management)
    chargers: dict[str, str | None] = field(default_factory=dict)  # id -> name
    online: set[str] = field(default_factory=set)
    #: of the configuration in force ("" without one): forms say what they were made on
    version: str = ""
    #: warnings about the configuration in force
    advice: tuple[ConfigAdvice, ...] = ()
    #: a gateway site seen from the cloud: the status is what its box reported, when
    gateway: bool = False
    reported_at: datetime | None = None
    #: its box is offline (the status is as last reported), and when it was last heard
    stale: bool = False
    last_contact: datetime | None = None

    @property
    def rows(self) -> list[NodeRow]:
        return list(_rows(self.config.tree)) if self.config else []

    def node(self, node_id: str) -> Node | None:
        return next((r.node for r in self.rows if r.id == node_id), None)

    def chargers_under(self, node_id: str) -> list[str]:
        if self.config is None:
            return []
        config = self.config
        return sorted(
            cid
            for cid in self.chargers
            if (config.settings_for(cid).node or config.tree.id) == node_id
        )

    def has_own_settings(self, charger_id: str) -> bool:
        return self.config is not None and charger_id in self.config.chargers

    def settings(self, charger_id: str) -> ChargerSettings | None:
        return self.config.settings_for(charger_id) if self.config else None

    def meter_kind(self, node: Node) -> str:
        return meter_kind(self.config, node) if self.config else "none"

    def meter_config(self, node_id: str) -> MeterConfig | None:
        return self.config.meters.get(node_id) if self.config else None

    def node_status(self, node_id: str) -> NodeStatus | None:
        nodes = self.status.nodes if self.status else ()
        return next((n for n in nodes if n.id == node_id), None)

    def meter_status(self, node_id: str) -> MeterStatus | None:
        return self.status.meters.get(node_id) if self.status else None

    def dynamic_limit(self, node_id: str) -> float | None:
        return self.status.dynamic_limits.get(node_id) if self.status else None

    def dynamic_origin(self, node_id: str) -> LimitOrigin | None:
        return self.status.dynamic_limit_origins.get(node_id) if self.status else None

    def advice_for(self, subject: str) -> list[str]:
        return [a.message for a in self.advice if a.subject == subject]

    @property
    def connectors(self) -> tuple[ConnectorStatus, ...]:
        return self.status.connectors if self.status else ()

    def reasons(self, conn: ConnectorStatus) -> list[Reason]:
        return [fmt.reason(k) for k in conn.reason_kinds]

    def flag(self, charger_id: str) -> tuple[str, datetime | None] | None:
        status = self.status.chargers.get(charger_id) if self.status else None
        if status is None or not status.flagged:
            return None
        return status.flagged, status.flagged_at

    def charger_name(self, charger_id: str) -> str:
        return self.chargers.get(charger_id) or charger_id


def load_view(
    service: LoadManagementService,
    site_uid: str,
    stored: Iterable[tuple[str, str | None]],
    online: Iterable[str] = (),
    reported: ReportedLoad | None = None,
) -> LoadView:
    """The view of a site; `stored` are the site's charging stations (id, name); `reported`:
    a gateway site's status as its box reported it, shown instead of this process's."""
    try:
        config = service.config(site_uid)
    except NotFound:
        return LoadView(site_uid, None, None, dict(stored), set(online))
    status = reported.status if reported is not None else service.status(site_uid)
    chargers = dict(stored)
    for cid in [*config.chargers, *status.chargers]:
        chargers.setdefault(cid, None)
    editing = service.editing
    return LoadView(
        site_uid,
        config,
        status,
        chargers,
        set(online),
        editing.version(site_uid),
        editing.advice(site_uid),
    )


@dataclass(frozen=True, slots=True)
class ChargerLoadView:
    """A charging station's place in load management, for its page."""

    site: LoadView
    charger_id: str

    @property
    def configured(self) -> bool:
        return self.site.config is not None

    @property
    def own(self) -> bool:
        return self.site.has_own_settings(self.charger_id)

    @property
    def settings(self) -> ChargerSettings | None:
        return self.site.settings(self.charger_id)

    @property
    def node_id(self) -> str | None:
        config = self.site.config
        return (self.settings.node if self.settings else None) or (
            config.tree.id if config else None
        )

    @property
    def flag(self) -> tuple[str, datetime | None] | None:
        return self.site.flag(self.charger_id)

    @property
    def connectors(self) -> list[ConnectorStatus]:
        return [c for c in self.site.connectors if c.charger_id == self.charger_id]

    @property
    def cpms_caps(self) -> dict[str, float | None]:
        status = self.site.status.chargers.get(self.charger_id) if self.site.status else None
        return status.cpms_caps if status else {}

    @property
    def advice(self) -> list[str]:
        return self.site.advice_for(self.charger_id)


async def site_load_view(rt: Runtime, site_uid: str) -> LoadView:
    """The load-management view of a site, with its charging stations and who is online."""
    stored_chargers = await rt.chargers.of_site(site_uid)
    stored = [(c.id, c.name) for c in stored_chargers]
    site = await rt.sites.find(site_uid)
    if rt.box is None and site is not None and site.type == "gateway":
        # Its box runs its load management: show what the box reported (chargers online as
        # the box reported them too).
        reported = rt.gateways.reported_load(site_uid)
        online = [c.id for c in stored_chargers if c.connected]
        view = load_view(rt.loadmgmt, site_uid, stored, online, reported)
        health = await rt.gateways.status(site_uid)
        return dataclasses.replace(
            view,
            gateway=True,
            reported_at=reported.reported_at if reported else None,
            stale=not health.online,
            last_contact=health.last_contact,
        )
    online = [lc.id for lc in rt.hub.live_for_site(site_uid) if lc.connected]
    return load_view(rt.loadmgmt, site_uid, stored, online)


_CHARGER_NOTICES = {"lm-saved": "Load management settings saved: they are in force now."}


async def charger_load_context(
    rt: Runtime, site_uid: str, charger_id: str, done: str | None = None
) -> dict[str, Any]:
    """What the charging station page needs for its load-management section."""
    view = ChargerLoadView(await site_load_view(rt, site_uid), charger_id)
    return {
        "lm_charger": view,
        "lm_values": charger_form_values(None, view.settings, view.node_id),
        "lm_errors": {},
        "lm_notice": _CHARGER_NOTICES.get(done or ""),
        "fmt": fmt,
        "line_pairs": LINE_PAIRS,
        "rotations": ROTATIONS,
    }
