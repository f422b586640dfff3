"""A site's load-management configuration: JSON in the API and the database, frozen objects
for the allocator.

    {"enabled": true, "policy": "equal_share", "resend_step": 1.0, "min_interval": 10,
     "continuity_horizon_minutes": null,
     "tree": {"id": "grid", "max_current": 63, "safety_current": 0, "max_imbalance": null,
              "metered": false, "children": [{"id": "garage", "max_current": 32}]},
     "chargers": {"CP-1": {"node": "garage", "max_current": 32, "min_current": 6,
                           "wiring": "3-phase", "phase_rotation": ["L1", "L2", "L3"],
                           "voltage": 230, "priority": 0, "tx_default_limit": 0,
                           "rate_unit": "A", "connectors": [1],
                           "default_dwell_minutes": null, "default_energy_kwh": null}}}

`wiring` is "L-N" (one line and neutral), "L-L" (between two lines, e.g. 208/240 V in North
America; `phase_rotation` names both lines) or "3-phase". Without it, `phases` decides as
before: 1 is L-N, 3 is three-phase. `phases` is the number of currents the charger reports
(1 for L-N and L-L). `voltage` is across the charger's supply: phase to neutral (230 V by
default) for L-N and three-phase, line to line for L-L (required there). The operator defaults
`default_dwell_minutes` / `default_energy_kwh` stand for a departure and an energy need when the
car does not tell them (OCPP 1.6); the controller turns them into `Demand.departure` and
`Demand.energy_needed`.

`continuity_horizon_minutes` (null: off, the default) turns on the allocator's continuity head
start (`AllocationOptions.continuity_horizon`; docs/load-management.md, "Continuity"): above
their min current, cars that took more this session are favoured, as the ACN benchmark's
"HARMON-E" rows do with 120.

A charger of a managed site that is not listed is managed with `default_charger` under the
root, so that a newly installed charger can never draw outside the site's limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal

from harmone.errors import ConfigError
from harmone.loadmgmt.meters import MeterConfig
from harmone.loadmgmt.model import AllocationOptions, ChargerSpec, Node, Phase, Policy, Wiring

__all__ = ["ChargerSettings", "SiteLoadConfig", "build_tree", "parse_config"]

RateUnit = Literal["A", "W"]
_NODE_KEYS = {
    "id",
    "max_current",
    "safety_current",
    "dynamic_limit",
    "max_imbalance",
    "metered",
    "children",
    "meter",
}
_CHARGER_KEYS = {
    "node",
    "max_current",
    "min_current",
    "phases",
    "phase_rotation",
    "priority",
    "tx_default_limit",
    "rate_unit",
    "voltage",
    "connectors",
    "wiring",
    "default_dwell_minutes",
    "default_energy_kwh",
}
_TOP_KEYS = {
    "enabled",
    "policy",
    "resend_step",
    "min_interval",
    "continuity_horizon_minutes",
    "tree",
    "chargers",
    "default_charger",
}


@dataclass(frozen=True, slots=True)
class ChargerSettings:
    """Electrical settings of one charger (one ChargerSpec once placed in the tree)."""

    node: str | None = None  # None: under the root
    max_current: float = 32.0
    min_current: float = 6.0
    phases: int = 3
    phase_rotation: tuple[Phase, ...] | None = None
    priority: int = 0
    tx_default_limit: float = 0.0
    rate_unit: RateUnit = "A"
    voltage: float = 230.0
    connectors: tuple[int, ...] = (1,)
    #: None: from `phases` (1: L-N, 3: three-phase).
    wiring: Wiring | None = None
    #: Operator defaults for cars that do not say when they leave and what they need.
    default_dwell_minutes: float | None = None
    default_energy_kwh: float | None = None

    @property
    def wiring_in_force(self) -> Wiring:
        if self.wiring is not None:
            return self.wiring
        return Wiring.LN if self.phases == 1 else Wiring.THREE_PHASE

    def spec(
        self, charger_id: str, connectors: tuple[int, ...] = (), ignores_profile: bool = False
    ) -> ChargerSpec:
        ids = tuple(sorted(set(self.connectors) | set(connectors)))
        return ChargerSpec(
            id=charger_id,
            max_current=self.max_current,
            connector_ids=ids,
            min_current=self.min_current,
            phases=self.phases,
            phase_rotation=self.phase_rotation,
            priority=self.priority,
            wiring=self.wiring_in_force,
            voltage=self.voltage,
            tx_default_limit=self.tx_default_limit,
            ignores_profile=ignores_profile,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "max_current": self.max_current,
            "min_current": self.min_current,
            "phases": self.phases,
            "phase_rotation": [p.name for p in self.phase_rotation]
            if self.phase_rotation
            else None,
            "priority": self.priority,
            "tx_default_limit": self.tx_default_limit,
            "rate_unit": self.rate_unit,
            "voltage": self.voltage,
            "connectors": list(self.connectors),
            "wiring": self.wiring_in_force.value,
            "default_dwell_minutes": self.default_dwell_minutes,
            "default_energy_kwh": self.default_energy_kwh,
        }


@dataclass(frozen=True, slots=True)
class SiteLoadConfig:
    enabled: bool
    tree: Node
    policy: Policy = Policy.EQUAL_SHARE
    #: A new limit is sent when it differs from the last one by at least this (A).
    resend_step: float = 1.0
    #: Increases are sent at most this often per connector (s); decreases are never delayed.
    min_interval: float = 10.0
    chargers: Mapping[str, ChargerSettings] = field(default_factory=dict)
    default_charger: ChargerSettings = field(default_factory=ChargerSettings)
    #: Modbus TCP meters by node id, and their configuration as given (for to_json).
    meters: Mapping[str, MeterConfig] = field(default_factory=dict)
    meters_json: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The continuity head start's horizon (minutes); None: off.
    continuity_horizon_minutes: float | None = None

    def allocation_options(self, base: AllocationOptions) -> AllocationOptions:
        """`base` with this site's allocation settings (unset ones keep `base`'s)."""
        if self.continuity_horizon_minutes is None:
            return base
        horizon = timedelta(minutes=self.continuity_horizon_minutes)
        return replace(base, continuity_horizon=horizon)

    def settings_for(self, charger_id: str) -> ChargerSettings:
        return self.chargers.get(charger_id, self.default_charger)

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "policy": self.policy.value,
            "resend_step": self.resend_step,
            "min_interval": self.min_interval,
            "continuity_horizon_minutes": self.continuity_horizon_minutes,
            "tree": _node_json(self.tree, self.meters_json),
            "chargers": {k: v.to_json() for k, v in sorted(self.chargers.items())},
            "default_charger": self.default_charger.to_json(),
        }


def _node_json(node: Node, meters: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    out = {
        "id": node.id,
        "max_current": node.max_current,
        "safety_current": node.safety_current,
        "max_imbalance": node.max_imbalance,
        "metered": node.metered,
        "children": [_node_json(c, meters) for c in node.children if isinstance(c, Node)],
    }
    if node.id in meters:
        out["meter"] = dict(meters[node.id])
    return out


def _parse_meters(obj: Any, where: str = "tree") -> dict[str, tuple[MeterConfig, dict[str, Any]]]:
    """The `meter` objects of the (already shape-checked) raw tree, by node id."""
    found: dict[str, tuple[MeterConfig, dict[str, Any]]] = {}
    meter = obj.get("meter")
    if meter is not None:
        if not isinstance(meter, Mapping):
            raise ConfigError(f"{where}.meter must be an object")
        raw = {k: v for k, v in meter.items() if k != "node_id"}
        try:
            found[obj["id"]] = (MeterConfig.from_dict({**raw, "node_id": obj["id"]}), raw)
        except ConfigError as exc:
            raise ConfigError(f"{where}.meter: {exc}") from None
    for i, child in enumerate(obj.get("children", [])):
        found.update(_parse_meters(child, f"{where}.children[{i}]"))
    return found


def _num(obj: Mapping[str, Any], key: str, default: float | None, where: str) -> float:
    value = obj.get(key, default)
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}.{key} must be a number")
    if value < 0 or value != value or value in (float("inf"),):
        raise ConfigError(f"{where}.{key} must be a finite number >= 0")
    return float(value)


def _unknown(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(extra)}")


def _parse_node(obj: Any, where: str, depth: int = 0) -> Node:
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{where} must be an object")
    if depth > 8:
        raise ConfigError(f"{where}: the tree is deeper than 8 levels")
    _unknown(obj, _NODE_KEYS - {"dynamic_limit"}, where)
    node_id = obj.get("id")
    if not isinstance(node_id, str) or not node_id or len(node_id) > 64:
        raise ConfigError(f"{where}.id must be a non-empty string of at most 64 characters")
    imbalance = obj.get("max_imbalance")
    children = obj.get("children", [])
    if not isinstance(children, list):
        raise ConfigError(f"{where}.children must be a list")
    metered = obj.get("metered", False)
    if not isinstance(metered, bool):
        raise ConfigError(f"{where}.metered must be true or false")
    metered = metered or obj.get("meter") is not None  # a Modbus meter measures this node
    return Node(
        id=node_id,
        max_current=_num(obj, "max_current", None, where),
        safety_current=_num(obj, "safety_current", 0.0, where),
        max_imbalance=None if imbalance is None else _num(obj, "max_imbalance", None, where),
        metered=metered,
        children=tuple(
            _parse_node(c, f"{where}.children[{i}]", depth + 1) for i, c in enumerate(children)
        ),
    )


def _parse_charger(obj: Any, where: str) -> ChargerSettings:
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{where} must be an object")
    _unknown(obj, _CHARGER_KEYS, where)
    d = ChargerSettings()
    node = obj.get("node")
    if node is not None and not isinstance(node, str):
        raise ConfigError(f"{where}.node must be a node id")
    wiring = _parse_wiring(obj, where)
    phases = obj.get("phases")
    if phases is not None and (phases not in (1, 3) or isinstance(phases, bool)):
        raise ConfigError(f"{where}.phases must be 1 or 3")
    if wiring is None:
        wiring = Wiring.LN if phases == 1 else Wiring.THREE_PHASE
    reported = 3 if wiring is Wiring.THREE_PHASE else 1
    if phases is not None and phases != reported:
        raise ConfigError(
            f"{where}.phases is {phases} but an {wiring.value} charger reports {reported} "
            "current(s); give wiring alone"
        )
    if wiring is Wiring.LL and obj.get("voltage") is None:
        raise ConfigError(
            f"{where}.voltage is required for an L-L charger: its line-to-line voltage "
            "(e.g. 208 or 240)"
        )
    rotation = obj.get("phase_rotation")
    parsed_rotation: tuple[Phase, ...] | None = None
    if rotation is not None:
        if not isinstance(rotation, list) or not all(isinstance(p, str) for p in rotation):
            raise ConfigError(f'{where}.phase_rotation must be a list like ["L2", "L3", "L1"]')
        try:
            parsed_rotation = tuple(Phase[p] for p in rotation)
        except KeyError:
            raise ConfigError(f"{where}.phase_rotation holds L1, L2 or L3 only") from None
    unit = obj.get("rate_unit", "A")
    if unit not in ("A", "W"):
        raise ConfigError(f'{where}.rate_unit must be "A" or "W"')
    priority = obj.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigError(f"{where}.priority must be an integer")
    connectors = obj.get("connectors", [1])
    if (
        not isinstance(connectors, list)
        or not connectors
        or not all(
            isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 100 for c in connectors
        )
    ):
        raise ConfigError(f"{where}.connectors must be a list of connector ids 1..100")
    voltage = _num(obj, "voltage", d.voltage, where)
    if not 100 <= voltage <= 500:
        raise ConfigError(f"{where}.voltage must be between 100 and 500 V")
    dwell = obj.get("default_dwell_minutes")
    energy = obj.get("default_energy_kwh")
    return ChargerSettings(
        node=node,
        max_current=_num(obj, "max_current", d.max_current, where),
        min_current=_num(obj, "min_current", d.min_current, where),
        phases=reported,
        wiring=wiring,
        default_dwell_minutes=None
        if dwell is None
        else _num(obj, "default_dwell_minutes", None, where),
        default_energy_kwh=None if energy is None else _num(obj, "default_energy_kwh", None, where),
        phase_rotation=parsed_rotation,
        priority=priority,
        tx_default_limit=_num(obj, "tx_default_limit", d.tx_default_limit, where),
        rate_unit=unit,
        voltage=voltage,
        connectors=tuple(sorted(set(connectors))),
    )


def _parse_wiring(obj: Mapping[str, Any], where: str) -> Wiring | None:
    wiring = obj.get("wiring")
    if wiring is None:
        return None
    try:
        return Wiring(wiring)
    except ValueError:
        raise ConfigError(
            f"{where}.wiring must be one of " + ", ".join(f'"{w.value}"' for w in Wiring)
        ) from None


def _horizon(obj: Mapping[str, Any]) -> float | None:
    if obj.get("continuity_horizon_minutes") is None:
        return None
    value = _num(obj, "continuity_horizon_minutes", None, "config")
    if not 1 <= value <= 24 * 60:
        raise ConfigError(
            "config.continuity_horizon_minutes must be between 1 and 1440 (24 h), "
            "or null to turn the continuity head start off"
        )
    return value


def parse_config(obj: Any) -> SiteLoadConfig:
    """Validate a configuration (API body or stored JSON); raises ConfigError saying where."""
    if not isinstance(obj, Mapping):
        raise ConfigError("load management configuration must be an object")
    _unknown(obj, _TOP_KEYS, "config")
    enabled = obj.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("config.enabled must be true or false")
    try:
        policy = Policy(obj.get("policy", Policy.EQUAL_SHARE.value))
    except ValueError:
        raise ConfigError(
            "config.policy must be one of " + ", ".join(p.value for p in Policy)
        ) from None
    if "tree" not in obj:
        raise ConfigError("config.tree is required: the site's grid connection and clusters")
    tree = _parse_node(obj["tree"], "tree")
    meters = _parse_meters(obj["tree"])
    chargers_obj = obj.get("chargers", {})
    if not isinstance(chargers_obj, Mapping):
        raise ConfigError("config.chargers must be an object keyed by charger id")
    chargers = {str(k): _parse_charger(v, f"chargers.{k}") for k, v in chargers_obj.items()}
    default = _parse_charger(obj.get("default_charger", {}), "default_charger")
    config = SiteLoadConfig(
        enabled=enabled,
        tree=tree,
        policy=policy,
        resend_step=_num(obj, "resend_step", 1.0, "config"),
        min_interval=_num(obj, "min_interval", 10.0, "config"),
        continuity_horizon_minutes=_horizon(obj),
        chargers=chargers,
        default_charger=default,
        meters={k: v[0] for k, v in meters.items()},
        meters_json={k: v[1] for k, v in meters.items()},
    )
    node_ids = {n.id for n in tree.walk()}
    for cid, s in [*chargers.items(), ("default_charger", default)]:
        if s.node is not None and s.node not in node_ids:
            raise ConfigError(f"chargers.{cid}.node {s.node!r} is not a node of the tree")
        if cid in node_ids:
            raise ConfigError(f"charger id {cid!r} is also a node id; ids must be unique")
    build_tree(config, dict.fromkeys(chargers, ()))  # the model's own checks, now
    default.spec("default_charger")
    return config


def build_tree(
    config: SiteLoadConfig,
    chargers: Mapping[str, tuple[int, ...]],
    ignoring: frozenset[str] = frozenset(),
    dynamic_limits: Mapping[str, float] | None = None,
) -> Node:
    """The allocator's tree: configured nodes with `chargers` (id -> connectors seen) hung
    under their nodes, dynamic limits applied and profile-ignoring chargers flagged."""
    placed: dict[str, list[ChargerSpec]] = {}
    for cid, connectors in chargers.items():
        s = config.settings_for(cid)
        placed.setdefault(s.node or config.tree.id, []).append(
            s.spec(cid, connectors, ignores_profile=cid in ignoring)
        )
    limits = dynamic_limits or {}

    def rebuild(node: Node) -> Node:
        kids: list[Node | ChargerSpec] = [rebuild(c) for c in node.children if isinstance(c, Node)]
        kids.extend(sorted(placed.get(node.id, []), key=lambda s: s.id))
        return replace(node, children=tuple(kids), dynamic_limit=limits.get(node.id))

    return rebuild(config.tree)
