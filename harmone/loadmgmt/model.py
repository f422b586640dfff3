"""Value objects of load management: the site tree, what is charging, meter readings, the result.

Everything here is frozen and checked on construction, so that the allocator can trust its input
and a bad configuration fails loudly (`ConfigError`) instead of producing a wrong limit.
Currents are in amps *per phase*; per-phase vectors are indexed by grid phase L1, L2, L3.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum, StrEnum

from harmone.errors import ConfigError

__all__ = [
    "DEFAULT_OPTIONS",
    "DEFAULT_VOLTAGE",
    "Allocation",
    "AllocationOptions",
    "ChargerSpec",
    "ConnectorGrant",
    "Demand",
    "LimitKind",
    "LimitSource",
    "Limitation",
    "Measurement",
    "MeterState",
    "Node",
    "NodeLoad",
    "Phase",
    "PhaseCurrents",
    "Policy",
    "Wiring",
    "amps_to_watts",
    "watts_to_amps",
]

#: One current per grid phase: (L1, L2, L3), in amps.
PhaseCurrents = tuple[float, float, float]

#: Phase-to-neutral voltage assumed when converting amps to watts (EU low voltage grid).
DEFAULT_VOLTAGE = 230.0


class Phase(Enum):
    """A grid phase."""

    L1 = 1
    L2 = 2
    L3 = 3

    @property
    def index(self) -> int:
        """Position of this phase in a `PhaseCurrents` vector."""
        return self.value - 1


class Wiring(StrEnum):
    """How a charger is connected to the grid."""

    #: Between one line and neutral (one grid phase).
    LN = "L-N"
    #: Between two lines (208/240 V, common in North America): its current flows out on one
    #: line and back on the other.
    LL = "L-L"
    #: On all three lines (and neutral), the same current on each.
    THREE_PHASE = "3-phase"


class Policy(StrEnum):
    """How current is shared between the connectors that are charging."""

    #: Max-min fair: every car gets the same current per phase unless it wants less or a
    #: fuse on its own path binds first.
    EQUAL_SHARE = "equal_share"
    #: By arrival: the earliest car gets all it wants, then the next, and so on.
    FIRST_COME_FIRST_SERVED = "first_come_first_served"
    #: Higher `ChargerSpec.priority` is served completely first; equal priorities share equally.
    PRIORITY = "priority"


# --- validation helpers -------------------------------------------------------------------------


def _number(value: object, what: str) -> float:
    # bool is an int subclass; a True max_current is a config bug, not 1 A.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _current(value: object, what: str) -> float:
    amps = _number(value, what)
    if amps < 0:
        raise ConfigError(f"{what} must not be negative, got {amps} A")
    return amps


def _ident(value: object, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty string, got {value!r}")


def _aware(value: object, what: str) -> None:
    # Naive and aware datetimes cannot be compared; refuse naive ones at the door.
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ConfigError(f"{what} must be a timezone-aware datetime, got {value!r}")


# --- the electrical model -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChargerSpec:
    """A charging station: a leaf of the site tree.

    `max_current` and `min_current` apply to each connector (a twin charger whose connectors share
    one supply is modelled as a `Node` holding the shared limit above the charger).
    `wiring` says how it is connected (L-N, L-L or three-phase); `phases` is the number of
    currents the charger reports (1 for L-N and L-L, 3 for three-phase) and, when `wiring` is not
    given, decides it (1: L-N, 3: three-phase). `phase_rotation[i]` is the grid phase that the
    charger's own phase i+1 is wired to (an L-L charger names its two lines); by default L1(-L2-L3).
    `voltage` is across the charger's supply: phase to neutral for L-N and three-phase, line to
    line for L-L; it converts energy to current. A charger that `ignores_profile` does not obey
    SetChargingProfile: it is never granted anything, only reserved at its measured draw.
    """

    id: str
    max_current: float
    connector_ids: tuple[int, ...] = (1,)
    #: IEC 61851: below 6 A a car may not charge at all, so a grant is 0 or at least this.
    min_current: float = 6.0
    #: 0: from `wiring` (three-phase when neither is given).
    phases: int = 0
    phase_rotation: tuple[Phase, ...] | None = None
    priority: int = 0
    wiring: Wiring | None = None
    voltage: float = DEFAULT_VOLTAGE
    #: Limit of the TxDefaultProfile: what a newly plugged car may draw before load management
    #: grants it anything. 0 A (the default) means "wait for a grant".
    tx_default_limit: float = 0.0
    ignores_profile: bool = False

    def __post_init__(self) -> None:
        _ident(self.id, "charger id")
        who = f"charger {self.id!r}"
        _current(self.max_current, f"{who} max_current")
        _current(self.min_current, f"{who} min_current")
        _current(self.tx_default_limit, f"{who} tx_default_limit")
        if self.max_current <= 0:
            raise ConfigError(f"{who} max_current must be positive")
        if self.min_current > self.max_current:
            raise ConfigError(
                f"{who} min_current {self.min_current} A is above max_current {self.max_current} A"
            )
        if self.tx_default_limit > self.max_current:
            raise ConfigError(f"{who} tx_default_limit is above max_current")
        self._settle_wiring(who)
        if _number(self.voltage, f"{who} voltage") <= 0:
            raise ConfigError(f"{who} voltage must be positive")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ConfigError(f"{who} priority must be an integer, got {self.priority!r}")
        object.__setattr__(self, "connector_ids", tuple(self.connector_ids))
        if not self.connector_ids:
            raise ConfigError(f"{who} needs at least one connector")
        for cid in self.connector_ids:
            if isinstance(cid, bool) or not isinstance(cid, int) or cid < 1:
                raise ConfigError(f"{who} connector ids must be integers >= 1, got {cid!r}")
        if len(set(self.connector_ids)) != len(self.connector_ids):
            raise ConfigError(f"{who} has duplicate connector ids {self.connector_ids}")
        if self.phase_rotation is not None:
            rotation = tuple(self.phase_rotation)
            object.__setattr__(self, "phase_rotation", rotation)
            if not all(isinstance(p, Phase) for p in rotation):
                raise ConfigError(f"{who} phase_rotation must hold Phase values, got {rotation!r}")
            if len(rotation) != self.line_count:
                raise ConfigError(
                    f"{who} is wired {self.wiring} ({self.line_count} line(s)) "
                    f"but has a rotation of {len(rotation)}"
                )
            if len(set(rotation)) != len(rotation):
                raise ConfigError(f"{who} phase_rotation repeats a grid phase: {rotation!r}")

    def _settle_wiring(self, who: str) -> None:
        phases = self.phases
        if isinstance(phases, bool) or phases not in (0, 1, 3):
            raise ConfigError(f"{who} phases must be 1 or 3, got {phases!r}")
        wiring = self.wiring
        if wiring is None:
            wiring = Wiring.LN if phases == 1 else Wiring.THREE_PHASE
        elif not isinstance(wiring, Wiring):
            try:
                wiring = Wiring(wiring)
            except ValueError:
                raise ConfigError(
                    f"{who} wiring must be one of {', '.join(w.value for w in Wiring)}"
                ) from None
        reported = 3 if wiring is Wiring.THREE_PHASE else 1
        if phases not in (0, reported):
            raise ConfigError(f"{who} is wired {wiring} but has {phases} phase(s)")
        object.__setattr__(self, "wiring", wiring)
        object.__setattr__(self, "phases", reported)

    @property
    def line_count(self) -> int:
        """How many grid lines the charger is connected to."""
        return {Wiring.LN: 1, Wiring.LL: 2, Wiring.THREE_PHASE: 3}[self.wiring or Wiring.LN]

    @property
    def grid_phases(self) -> tuple[Phase, ...]:
        """The grid line of each of the charger's own phases (both lines for L-L)."""
        if self.phase_rotation is not None:
            return self.phase_rotation
        return (Phase.L1, Phase.L2, Phase.L3)[: self.line_count]

    def watts_per_amp(self, lines_in_use: int | None = None) -> float:
        """Power drawn per amp of grant; a three-phase charger counts the lines in use."""
        if self.wiring is Wiring.THREE_PHASE:
            return self.voltage * (lines_in_use or 3)
        return self.voltage


@dataclass(frozen=True, slots=True)
class Node:
    """The grid connection (the root) or a (sub-)cluster behind its own fuse.

    `max_current` is the fuse, per phase. `dynamic_limit` is set at run time by an external
    energy manager or grid operator; the lower of the two is in force and 0 suspends charging
    below. A `metered` node expects a `Measurement` each allocation: without a fresh, healthy one
    its limit falls to `safety_current`. `max_imbalance`, if set, bounds the difference between
    the most and least loaded phase of the chargers' load below this node. `delta_wye_ratio`, if
    set, makes this node the delta primary of a delta-wye transformer feeding its children: its
    limits are primary line currents, each the difference of two secondary line currents divided
    by this turns ratio (primary line-to-line / secondary line-to-neutral voltage, 480/120 = 4).
    """

    id: str
    max_current: float
    safety_current: float = 0.0
    dynamic_limit: float | None = None
    max_imbalance: float | None = None
    metered: bool = False
    children: tuple[Node | ChargerSpec, ...] = ()
    delta_wye_ratio: float | None = None

    def __post_init__(self) -> None:
        _ident(self.id, "node id")
        who = f"node {self.id!r}"
        _current(self.max_current, f"{who} max_current")
        _current(self.safety_current, f"{who} safety_current")
        if self.safety_current > self.max_current:
            raise ConfigError(f"{who} safety_current is above its max_current")
        if self.dynamic_limit is not None:
            _current(self.dynamic_limit, f"{who} dynamic_limit")
        if self.max_imbalance is not None:
            _current(self.max_imbalance, f"{who} max_imbalance")
        if self.delta_wye_ratio is not None and _number(self.delta_wye_ratio, who) <= 0:
            raise ConfigError(f"{who} delta_wye_ratio must be positive")
        object.__setattr__(self, "children", tuple(self.children))
        for child in self.children:
            if not isinstance(child, Node | ChargerSpec):
                raise ConfigError(f"{who} has a child that is not a Node or ChargerSpec: {child!r}")
        # Children checked their own subtrees; ids must still be unique across siblings' subtrees,
        # because reasons and measurements name nodes and chargers by id alone.
        seen: set[str] = set()
        for item in self.walk():
            if item.id in seen:
                raise ConfigError(f"duplicate id {item.id!r} in the tree of {who}")
            seen.add(item.id)

    def walk(self) -> Iterator[Node | ChargerSpec]:
        """Every node and charger of this subtree, this node first (pre-order)."""
        stack: list[Node | ChargerSpec] = [self]
        while stack:
            item = stack.pop()
            yield item
            if isinstance(item, Node):
                stack.extend(reversed(item.children))

    def chargers(self) -> Iterator[ChargerSpec]:
        """The chargers of this subtree, in tree order."""
        return (item for item in self.walk() if isinstance(item, ChargerSpec))


# --- what is happening right now ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Demand:
    """A connector with a car that is charging (or wants to).

    `measured` is the charger's own reading per *charger* phase (one value per phase it has),
    taken at `measured_at`. `limit_in_force` is the limit the charger was obeying since
    `limit_since`; with a settled reading it lets the allocator see a car drawing well below its
    grant and give the rest to others. `car_max`, when known (ISO 15118, a car profile), caps
    what the car is granted.

    The rest is history and intent, which the allocator needs to take turns and to meet
    departures (docs/load-management.md, "What the controller fills in"): `departure` and
    `energy_needed` (Wh still wanted) when known; `energy_delivered` (Wh so far this session);
    `running_since` (granted more than 0 A without a break since then) or `paused_since` (held
    at 0 A by load management since then); neither: not yet started.
    """

    charger_id: str
    connector_id: int
    charging_since: datetime
    measured: tuple[float, ...] | None = None
    measured_at: datetime | None = None
    limit_in_force: float | None = None
    limit_since: datetime | None = None
    car_max: float | None = None
    departure: datetime | None = None
    energy_needed: float | None = None
    energy_delivered: float = 0.0
    running_since: datetime | None = None
    paused_since: datetime | None = None

    def __post_init__(self) -> None:
        _ident(self.charger_id, "demand charger id")
        who = f"demand for {self.charger_id!r} connector {self.connector_id!r}"
        if (
            isinstance(self.connector_id, bool)
            or not isinstance(self.connector_id, int)
            or self.connector_id < 1
        ):
            raise ConfigError(f"{who}: connector id must be an integer >= 1")
        _aware(self.charging_since, f"{who} charging_since")
        if self.measured is not None:
            measured = tuple(self.measured)
            object.__setattr__(self, "measured", measured)
            if not 1 <= len(measured) <= 3:
                raise ConfigError(f"{who}: measured needs 1 to 3 phase values, got {measured!r}")
            for amps in measured:
                _current(amps, f"{who} measured current")
            if self.measured_at is None:
                raise ConfigError(f"{who}: measured needs measured_at")
        if self.measured_at is not None:
            _aware(self.measured_at, f"{who} measured_at")
        if (self.limit_in_force is None) != (self.limit_since is None):
            raise ConfigError(f"{who}: limit_in_force and limit_since go together")
        if self.limit_in_force is not None:
            _current(self.limit_in_force, f"{who} limit_in_force")
        if self.limit_since is not None:
            _aware(self.limit_since, f"{who} limit_since")
        if self.car_max is not None:
            _current(self.car_max, f"{who} car_max")
        for name in ("departure", "running_since", "paused_since"):
            if getattr(self, name) is not None:
                _aware(getattr(self, name), f"{who} {name}")
        if self.running_since is not None and self.paused_since is not None:
            raise ConfigError(f"{who}: a car is running or paused, not both")
        if self.energy_needed is not None:
            _current(self.energy_needed, f"{who} energy_needed (Wh)")
        _current(self.energy_delivered, f"{who} energy_delivered (Wh)")

    @property
    def key(self) -> tuple[str, int]:
        return (self.charger_id, self.connector_id)


@dataclass(frozen=True, slots=True)
class Measurement:
    """A power meter's reading of the non-charger (building) load through a node.

    The load is what flows through the node's fuse *other than* the chargers below it, including
    the building load of its sub-clusters (a meter that sees the chargers too must have their
    draw subtracted by the caller). Negative values (export, e.g. PV) are accepted and counted as
    0: generation can vanish faster than the next allocation. `failed` marks a meter that did
    not answer; its node then falls to its safety current.
    """

    node_id: str
    load: PhaseCurrents
    at: datetime
    failed: bool = False

    def __post_init__(self) -> None:
        _ident(self.node_id, "measurement node id")
        load = tuple(self.load)
        if len(load) != 3:
            raise ConfigError(f"measurement of {self.node_id!r} needs 3 phase values, got {load!r}")
        for amps in load:
            _number(amps, f"measurement of {self.node_id!r} load")
        object.__setattr__(self, "load", load)
        _aware(self.at, f"measurement of {self.node_id!r} at")


@dataclass(frozen=True, slots=True)
class AllocationOptions:
    """Tuning of the allocator; the defaults suit AC chargers reporting meter values each minute."""

    #: Grants are multiples of this (A). 0.1 matches OCPP's one decimal; use 1.0 for chargers
    #: that only accept whole amps.
    step: float = 0.1
    #: A settled draw more than this below the limit in force means the car wants less (A).
    give_back_below: float = 2.0
    #: Such a car is granted its draw plus this margin (A); must exceed `give_back_below` so that
    #: a car that keeps drawing the same is not alternately capped and uncapped.
    give_back_margin: float = 3.0
    #: How long after a limit change a car's draw is not yet trusted (ramping up or down).
    settle_time: timedelta = timedelta(seconds=60)
    #: A node meter reading older than this counts as a failed meter.
    meter_max_age: timedelta = timedelta(seconds=60)
    #: A charger reading older than this is ignored (treated as unknown).
    draw_max_age: timedelta = timedelta(seconds=300)
    #: A charger phase drawing at least this (A) is in use; if none is, all its phases are assumed.
    active_phase_threshold: float = 1.0
    #: Taking turns: a car started after a pause keeps its turn at least this long (unless a
    #: limit forces otherwise), so that no car is switched on and off every round.
    min_run: timedelta = timedelta(minutes=60)
    #: A car paused this long goes before every car that is not protected by `min_run`.
    max_wait: timedelta = timedelta(minutes=120)
    #: With a departure and an energy need, a car is first given the current that finishes it
    #: in time, times this margin (the rest is then shared equally).
    deadline_margin: float = 1.2
    #: Above their min current, a car that took more this session (`Demand.energy_delivered`)
    #: is favoured: E Wh more than another car is worth a head start of E / (watts per amp x
    #: this) A while both want more. Without departure times, the car that took most has
    #: usually been plugged in longest and leaves soonest; serving it first delivers more
    #: before cars leave (docs/load-management.md, "Benchmark"). Mins still go first, by turns.
    #: None (the default): the same current for every car; the benchmark uses 2 h.
    continuity_horizon: timedelta | None = None

    def __post_init__(self) -> None:
        for name in ("step", "give_back_below", "give_back_margin", "active_phase_threshold"):
            _current(getattr(self, name), f"option {name}")
        if self.step < 0.001:
            raise ConfigError("option step must be at least 0.001 A")
        if self.give_back_margin <= self.give_back_below:
            raise ConfigError("option give_back_margin must be larger than give_back_below")
        if _number(self.deadline_margin, "option deadline_margin") < 1:
            raise ConfigError("option deadline_margin must be at least 1")
        for name in ("settle_time", "meter_max_age", "draw_max_age", "min_run", "max_wait"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value < timedelta(0):
                raise ConfigError(f"option {name} must be a non-negative timedelta")
        horizon = self.continuity_horizon
        if horizon is not None and (not isinstance(horizon, timedelta) or horizon <= timedelta(0)):
            raise ConfigError("option continuity_horizon must be a positive timedelta or None")


DEFAULT_OPTIONS = AllocationOptions()


# --- the result ---------------------------------------------------------------------------------


class LimitKind(StrEnum):
    """Why a connector got less than its charger's max current."""

    NODE_LIMIT = "node_limit"  # a fuse (or its dynamic / safety limit) has no room on a phase
    SUSPENDED = "suspended"  # a node on its path has a limit of 0 A
    IMBALANCE = "imbalance"  # more would break a node's max phase imbalance
    PAUSED_BELOW_MIN = "paused_below_min"  # its min current does not fit: paused at 0 A
    CAR_MAX = "car_max"  # the car cannot take more
    CAR_DRAW = "car_draw"  # the car draws well below its grant: granted draw + margin
    IGNORES_PROFILE = "ignores_profile"  # not controllable: reserved at its draw
    NOT_GRANTABLE = "not_grantable"  # no multiple of the step lies between its min and max


@dataclass(frozen=True, slots=True)
class Limitation:
    """One reason, for people (`message`) and for code (`kind`, `node_id`, `phases`)."""

    kind: LimitKind
    message: str
    node_id: str | None = None
    #: The grid phases with no room (for an imbalance: the phases that may not rise further).
    phases: tuple[Phase, ...] = ()

    def __str__(self) -> str:
        return self.message


class LimitSource(StrEnum):
    """Which value set a node's effective limit."""

    CONFIGURED = "configured"
    DYNAMIC = "dynamic"
    SAFETY = "safety"


class MeterState(StrEnum):
    NONE = "none"  # no meter at this node
    OK = "ok"
    FAILED = "failed"  # the reading says the meter failed
    STALE = "stale"  # the last reading is too old
    MISSING = "missing"  # the node is metered but no reading was given


@dataclass(frozen=True, slots=True)
class ConnectorGrant:
    """What one connector gets.

    `limit_to_send` is the per-phase current for its TxProfile (0 pauses it). `per_phase` is the
    current counted on each grid phase: the grant on the phases it loads, or for a connector
    that is idle or ignores its profile, what is reserved for it (`reserved` is then True).
    `need` is what it would take if there were room.
    """

    charger_id: str
    connector_id: int
    charging: bool
    reserved: bool
    limit_to_send: float
    per_phase: PhaseCurrents
    phases: tuple[Phase, ...]
    need: float
    reasons: tuple[Limitation, ...] = ()

    @property
    def paused(self) -> bool:
        """Charging, controllable, and granted nothing."""
        return self.charging and not self.reserved and self.limit_to_send == 0


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """The load of one node after allocation. `headroom` is negative on an overloaded phase."""

    node_id: str
    limit: float
    limit_source: LimitSource
    meter: MeterState
    non_charger_load: PhaseCurrents
    charger_load: PhaseCurrents
    load: PhaseCurrents
    headroom: PhaseCurrents
    imbalance: float


@dataclass(frozen=True, slots=True)
class Allocation:
    """The result of one `allocate` call; nodes and connectors in tree order."""

    at: datetime
    policy: Policy
    connectors: tuple[ConnectorGrant, ...]
    nodes: tuple[NodeLoad, ...]

    def connector(self, charger_id: str, connector_id: int) -> ConnectorGrant:
        for grant in self.connectors:
            if grant.charger_id == charger_id and grant.connector_id == connector_id:
                return grant
        raise KeyError((charger_id, connector_id))

    def node(self, node_id: str) -> NodeLoad:
        for load in self.nodes:
            if load.node_id == node_id:
                return load
        raise KeyError(node_id)


# --- units --------------------------------------------------------------------------------------


def _power_args(phases: int, voltage: float, wiring: Wiring | None) -> None:
    if phases not in (1, 2, 3) or isinstance(phases, bool):
        raise ConfigError(f"phases must be 1, 2 or 3, got {phases!r}")
    if wiring in (Wiring.LN, Wiring.LL) and phases != 1:
        raise ConfigError(f"an {wiring} charger carries one current, not {phases}")
    if _number(voltage, "voltage") <= 0:
        raise ConfigError(f"voltage must be positive, got {voltage!r}")


def amps_to_watts(
    current: float, phases: int, voltage: float = DEFAULT_VOLTAGE, *, wiring: Wiring | None = None
) -> float:
    """P = U x I x phases, for chargers whose profiles are in W (round down before sending).

    `voltage` is across the charger's supply: phase to neutral (L-N, three-phase) or line to
    line (L-L, whose one current gives P = U_LL x I). `phases` is the number of lines in use.
    """
    _power_args(phases, voltage, wiring)
    return voltage * _current(current, "current") * phases


def watts_to_amps(
    power: float, phases: int, voltage: float = DEFAULT_VOLTAGE, *, wiring: Wiring | None = None
) -> float:
    """I = P / (U x phases): the current per line of a power limit (see `amps_to_watts`)."""
    _power_args(phases, voltage, wiring)
    return _current(power, "power") / (voltage * phases)
