"""Who goes first when not every car's min current fits, and what a deadline asks for.

Internal to `allocate`; pure functions of the demands' history and `now`.

Admission order within a tier (docs/load-management.md, "Taking turns"):

1. cars *protected* by `min_run`: started less than `min_run` ago, by start time;
2. cars that have waited at least `max_wait` (paused, or never started since arrival), longest
   first;
3. the rest: cars with a departure and an energy need by least laxity (the time they can still
   afford to wait), then the others by least energy delivered this session, longest wait first.

Ties are broken by arrival, charger id, connector id, so the order is deterministic.
"""

from __future__ import annotations

from datetime import datetime

from harmone.loadmgmt.model import AllocationOptions, Demand
from harmone.loadmgmt.problem import Conn

__all__ = [
    "admission_order",
    "deadline_caps",
    "laxity_hours",
    "least_laxity_first",
    "protected",
    "waited",
]


def waited(d: Demand, now: datetime) -> float:
    """Seconds the car has been held at 0 A (since its pause, or since it arrived); 0 if running."""
    if d.running_since is not None:
        return 0.0
    since = d.paused_since if d.paused_since is not None else d.charging_since
    return max(0.0, (now - since).total_seconds())


def laxity_hours(conn: Conn, now: datetime) -> float | None:
    """Hours the car could still wait and finish at its need; None without departure and energy."""
    d = conn.demand
    if d is None or d.departure is None or d.energy_needed is None or conn.need <= 0:
        return None
    left = (d.departure - now).total_seconds() / 3600
    watts = conn.charger.watts_per_amp(len(conn.phases)) * conn.need / 1000
    return left - d.energy_needed / watts


def protected(conn: Conn, now: datetime, options: AllocationOptions) -> bool:
    """Started less than `options.min_run` ago: it keeps its turn."""
    d = conn.demand
    return d is not None and d.running_since is not None and now - d.running_since < options.min_run


def least_laxity_first(members: list[int], conns: list[Conn], now: datetime) -> list[int]:
    """Cars with a deadline, least laxity first (ties: arrival, charger id, connector id)."""

    def key(c: int) -> tuple[float, datetime, str, int]:
        conn = conns[c]
        assert conn.demand is not None
        lax = laxity_hours(conn, now)
        return (
            lax if lax is not None else float("inf"),
            conn.demand.charging_since,
            conn.charger.id,
            conn.connector_id,
        )

    return sorted(members, key=key)


def admission_order(
    tier: list[int], conns: list[Conn], now: datetime, options: AllocationOptions
) -> list[int]:
    """`tier` in the order cars are started at their min current (see the module docstring)."""
    min_run = options.min_run.total_seconds()
    max_wait = options.max_wait.total_seconds()

    def key(c: int) -> tuple[int, float, float, float, datetime, str, int]:
        conn = conns[c]
        d = conn.demand
        assert d is not None  # only charging connectors are in tiers
        tail = (d.charging_since, conn.charger.id, conn.connector_id)
        if d.running_since is not None:
            ran = (now - d.running_since).total_seconds()
            if ran < min_run:
                return (0, 0.0, -ran, 0.0, *tail)
        wait = waited(d, now)
        if wait >= max_wait:
            return (1, 0.0, -wait, 0.0, *tail)
        lax = laxity_hours(conn, now)
        if lax is not None:
            return (2, 0.0, lax, -wait, *tail)
        return (2, 1.0, d.energy_delivered, -wait, *tail)

    return sorted(tier, key=key)


def deadline_caps(
    members: list[int], conns: list[Conn], now: datetime, options: AllocationOptions, step: int
) -> dict[int, int]:
    """For cars with a departure and an energy need: the current (mA) that finishes them in
    time, times `options.deadline_margin`, between their min and their need."""
    caps: dict[int, int] = {}
    for c in members:
        conn = conns[c]
        d = conn.demand
        if d is None or d.departure is None or d.energy_needed is None:
            continue
        left = (d.departure - now).total_seconds() / 3600
        if left <= 0:
            wanted = conn.need
        else:
            watts = d.energy_needed / left * options.deadline_margin
            wanted = int(watts / conn.charger.watts_per_amp(len(conn.phases)) * 1000)
        wanted = -(-wanted // step) * step
        caps[c] = max(conn.smallest, min(conn.need, wanted))
    return caps
