"""From an allocation and the load state at `now`: the SetChargingProfile calls to make.

Pure. The rules (docs/load-management.md, "Enforcement"):

* **Per charger, independently.** At most one call per charger is in flight (the relay has one
  slot per charger anyway); a charger busy with a call, or silent, holds back only itself.
* **Decreases go at once**, to every charger concurrently: a limit at or below what the
  connector may already draw (`SiteLoadState.exposure`) can never overload anything.
* **An increase must fit.** It is sent only if, under every node on its path and on every phase
  it loads, the building load plus every connector's exposure plus the increase stays within
  the node's limit. Decreases not yet accepted and applied still count at their old value, so an
  increase waits for the decreases that make room for it. A first grant is an increase.
* Increases smaller than `resend_step` are not worth a call; a connector is raised again only
  `min_interval` after its last raise (a raise after a decrease, e.g. when a limit is lifted or a
  car starts, is not held back).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from harmone.loadmgmt.config import SiteLoadConfig
from harmone.loadmgmt.model import (
    Allocation,
    AllocationOptions,
    ChargerSpec,
    ConnectorGrant,
    Node,
)
from harmone.loadmgmt.profiles import Purpose, set_charging_profile
from harmone.loadmgmt.state import OVERDRAW, ChargerLoad, ConnectorLoad, SiteLoadState, Timing

__all__ = ["Plan", "ProfileCall", "make_plan"]

Kind = Literal["default", "decrease", "increase"]
_EPS = 0.05
_ROOM_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class ProfileCall:
    """One SetChargingProfile for one connector."""

    charger_id: str
    connector_id: int
    purpose: Purpose
    limit: float
    transaction_id: str | None
    kind: Kind
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Plan:
    """`calls` go now (at most one per charger); `held` increases wait for what is said."""

    calls: tuple[ProfileCall, ...]
    held: tuple[tuple[ProfileCall, str], ...] = ()


@dataclass(slots=True)
class _Room:
    """Load and limit per node and grid phase, and where each charger hangs."""

    limit: dict[str, float]
    load: dict[str, list[float]]
    paths: dict[str, tuple[str, ...]]
    specs: dict[str, ChargerSpec]

    def fits(self, charger_id: str, phases: Iterable[int], delta: float) -> str | None:
        for node in self.paths.get(charger_id, ()):
            for p in phases:
                if self.load[node][p] + delta > self.limit[node] + _ROOM_EPS:
                    return f"waiting for room under node {node!r} on L{p + 1}"
        return None

    def add(self, charger_id: str, phases: Iterable[int], delta: float) -> None:
        for node in self.paths.get(charger_id, ()):
            for p in phases:
                self.load[node][p] += delta


def make_plan(
    state: SiteLoadState,
    config: SiteLoadConfig,
    tree: Node,
    allocation: Allocation | None,
    timing: Timing,
    options: AllocationOptions,
    now: datetime,
    busy: frozenset[str] = frozenset(),
) -> Plan:
    """The calls to make now. `allocation` None means allocation failed: pause everything.
    Chargers in `busy` (a call of theirs still being carried out) get nothing new."""
    grants = (
        {}
        if allocation is None
        else {(g.charger_id, g.connector_id): g for g in allocation.connectors}
    )
    room = _room(state, config, tree, allocation, grants, options, now)
    targets, retries = _targets(state, allocation, room, timing, now)
    calls: list[ProfileCall] = []
    held: list[tuple[ProfileCall, str]] = []
    increases: list[tuple[ProfileCall, tuple[int, ...], float]] = []
    for cid, ch in state.chargers.items():
        if not ch.connected or ch.call_since is not None or cid in busy:
            continue
        default = _default_call(cid, ch, config, timing, now)
        if default is not None:
            calls.append(default)
            continue
        chosen: ProfileCall | None = None
        for conn, tx in sorted(ch.txs.items()):
            target = targets.get((cid, conn))
            if target is None or tx.sending is not None:
                continue
            exposure = state.exposure(cid, conn, config.settings_for(cid), options, now)
            refresh = tx.refresh or (cid, conn) in retries
            why = _worth_sending(config, refresh, target, tx, now)
            if why is None:
                continue
            kind: Kind = "decrease" if target <= exposure + _EPS else "increase"
            call = _tx_call(cid, ch, conn, tx.transaction_id, target, kind, config)
            if kind == "decrease":
                chosen = call
                break
            if why != "ok":
                held.append((call, why))
            elif chosen is None:
                phases = _phases(grants, room, cid, conn)
                increases.append((call, phases, target - exposure))
                chosen = call
        if chosen is not None and chosen.kind == "decrease":
            calls.append(chosen)
            increases = [i for i in increases if i[0].charger_id != cid]
    for call, phases, delta in increases:
        blocked = room.fits(call.charger_id, phases, delta)
        if blocked is None:
            room.add(call.charger_id, phases, delta)
            calls.append(call)
        else:
            held.append((call, blocked))
    return Plan(tuple(calls), tuple(held))


def _targets(
    state: SiteLoadState,
    allocation: Allocation | None,
    room: _Room,
    timing: Timing,
    now: datetime,
) -> tuple[dict[tuple[str, int], float], set[tuple[str, int]]]:
    """The limit each connector should have, and those to ask again although unchanged.

    A flagged charger is counted at the most it could draw, so it is left alone (a new car on
    it is told 0 A, which it may prove it obeys) unless even that reservation does not fit
    under a node above it: then it is asked for 0 A too."""
    targets: dict[tuple[str, int], float] = {}
    retries: set[tuple[str, int]] = set()
    if allocation is None:
        paused = {(cid, conn): 0.0 for cid, ch in state.chargers.items() for conn in ch.txs}
        return paused, retries
    for g in allocation.connectors:
        if g.charging and not g.reserved:
            targets[(g.charger_id, g.connector_id)] = round(g.limit_to_send, 1)
    retry = timedelta(seconds=timing.retry_interval)
    overloaded = {n.node_id for n in allocation.nodes if min(n.headroom) < 0}
    for cid, ch in state.chargers.items():
        if not ch.flagged:
            continue
        for conn, tx in ch.txs.items():
            if tx.limit is None or overloaded.intersection(room.paths.get(cid, ())):
                # A new car on a flagged charger is told 0 A: if it obeys, the flag is lifted.
                targets[(cid, conn)] = 0.0
            elif ch.flagged != OVERDRAW and (
                ch.last_failure is None or now - ch.last_failure >= retry
            ):
                # It failed a call: ask again for what it is counted at, to see it answer.
                retries.add((cid, conn))
                targets[(cid, conn)] = tx.limit
    return targets, retries


def _worth_sending(
    config: SiteLoadConfig, refresh: bool, target: float, tx: ConnectorLoad, now: datetime
) -> str | None:
    """ "ok" to send, a reason to hold an increase, or None when nothing needs sending."""
    current = tx.limit
    if current is None or refresh:
        return "ok"
    if target < current - _EPS:
        return "ok"
    if target <= current + _EPS:
        return None
    if current > 0 and target - current < config.resend_step:
        return None
    raised = tx.last_increase
    if (
        raised is not None
        and tx.last_change == raised
        and now - raised < timedelta(seconds=config.min_interval)
    ):
        return f"raised less than min_interval ({config.min_interval:g} s) ago"
    return "ok"


def _default_call(
    cid: str, ch: ChargerLoad, config: SiteLoadConfig, timing: Timing, now: datetime
) -> ProfileCall | None:
    if not ch.booted:
        return None
    failed = ch.last_failure
    retry = timedelta(seconds=timing.retry_interval)
    if ch.flagged and ch.flagged != OVERDRAW and failed is not None and now - failed < retry:
        return None
    s = config.settings_for(cid)
    for conn in sorted(set(s.connectors) | ch.connectors) or [1]:
        if conn in ch.defaults_fresh and ch.defaults.get(conn) == s.tx_default_limit:
            continue
        payload = set_charging_profile(
            ch.version,
            "TxDefaultProfile",
            conn,
            s.tx_default_limit,
            stack_level=ch.stack_level,
            unit=s.rate_unit,
            phases=s.phases,
            voltage=s.voltage,
        )
        return ProfileCall(
            cid, conn, "TxDefaultProfile", s.tx_default_limit, None, "default", payload
        )
    return None


def _tx_call(
    cid: str,
    ch: ChargerLoad,
    conn: int,
    transaction_id: str,
    limit: float,
    kind: Kind,
    config: SiteLoadConfig,
) -> ProfileCall:
    s = config.settings_for(cid)
    payload = set_charging_profile(
        ch.version,
        "TxProfile",
        conn,
        limit,
        transaction_id=transaction_id,
        stack_level=ch.stack_level,
        unit=s.rate_unit,
        phases=s.phases,
        voltage=s.voltage,
    )
    return ProfileCall(cid, conn, "TxProfile", limit, transaction_id, kind, payload)


def _room(
    state: SiteLoadState,
    config: SiteLoadConfig,
    tree: Node,
    allocation: Allocation | None,
    grants: dict[tuple[str, int], ConnectorGrant],
    options: AllocationOptions,
    now: datetime,
) -> _Room:
    paths: dict[str, tuple[str, ...]] = {}
    specs: dict[str, ChargerSpec] = {}
    stack: list[tuple[Node | ChargerSpec, tuple[str, ...]]] = [(tree, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, Node):
            stack.extend((child, (*path, item.id)) for child in item.children)
        else:
            paths[item.id], specs[item.id] = path, item
    limit = {n.id: n.max_current for n in tree.walk() if isinstance(n, Node)}
    load = {n: [0.0, 0.0, 0.0] for n in limit}
    if allocation is not None:
        for n in allocation.nodes:
            limit[n.node_id] = n.limit
            load[n.node_id] = [max(0.0, v) for v in n.non_charger_load]
    room = _Room(limit, load, paths, specs)
    for cid in state.chargers:
        spec = specs.get(cid)
        if spec is None:
            continue
        settings = config.settings_for(cid)
        for conn in spec.connector_ids:
            amps = state.exposure(cid, conn, settings, options, now)
            room.add(cid, _phases(grants, room, cid, conn), amps)
    return room


def _phases(
    grants: dict[tuple[str, int], ConnectorGrant], room: _Room, cid: str, conn: int
) -> tuple[int, ...]:
    """The grid phases a connector loads: the allocator's view for a controllable car (a
    1-phase car on a 3-phase charger loads one), else all of its charger's."""
    g = grants.get((cid, conn))
    if g is not None and g.charging and not g.reserved and g.phases:
        return tuple(p.index for p in g.phases)
    spec = room.specs.get(cid)
    return tuple(p.index for p in spec.grid_phases) if spec else (0, 1, 2)
