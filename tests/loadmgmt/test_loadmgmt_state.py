"""The load state as a reducer, the plan's rules on it, and its persistence (SQLite, PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from harmone.clock import ManualClock
from harmone.loadmgmt.allocate import allocate
from harmone.loadmgmt.config import parse_config
from harmone.loadmgmt.controller import SiteController
from harmone.loadmgmt.model import AllocationOptions
from harmone.loadmgmt.plan import make_plan
from harmone.loadmgmt.snapshot import restore, snapshot
from harmone.loadmgmt.state import NO_ANSWER, SiteLoadState, Timing
from harmone.ocpp.events import MeterReading, Sample, TransactionEnded, TransactionStarted
from harmone.ocpp.versions import OcppVersion
from harmone.store import Store

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
TIMING = Timing()
OPTIONS = AllocationOptions()
CONFIG = parse_config(
    {
        "min_interval": 0,
        "tree": {"id": "grid", "max_current": 32},
        "default_charger": {"max_current": 32},
    }
)


def _at(t: float) -> datetime:
    return NOW + timedelta(seconds=t)


def _site(*chargers: str) -> SiteLoadState:
    state = SiteLoadState()
    for i, cid in enumerate(chargers):
        state.connected(cid, OcppVersion.V16, booted=True)
        state.call_sent(cid, 1, None, _at(0))
        state.call_accepted(cid, 1, None, 0.0, None, CONFIG.settings_for(cid), TIMING, _at(0))
        state.apply(
            cid, TransactionStarted(1, str(i + 1)), CONFIG.settings_for(cid), TIMING, _at(1)
        )
    return state


def _plan(state: SiteLoadState, t: float) -> dict[str, tuple[str, float]]:
    tree = state.tree(CONFIG)
    a = allocate(tree, state.demands(CONFIG), [], _at(t), options=OPTIONS)
    plan = make_plan(state, CONFIG, tree, a, TIMING, OPTIONS, _at(t))
    return {c.charger_id: (c.kind, c.limit) for c in plan.calls}


def _accept(state: SiteLoadState, cid: str, tx: str, amps: float, t: float) -> None:
    state.call_sent(cid, 1, amps, _at(t))
    state.call_accepted(cid, 1, tx, amps, None, CONFIG.settings_for(cid), TIMING, _at(t))


def test_a_first_grant_is_an_increase_and_waits_for_the_decrease_to_apply() -> None:
    state = _site("A")
    assert _plan(state, 2) == {"A": ("increase", 32.0)}
    _accept(state, "A", "1", 32, 2)
    state.connected("B", OcppVersion.V16, booted=True)
    state.call_accepted("B", 1, None, 0.0, None, CONFIG.settings_for("B"), TIMING, _at(3))
    state.apply("B", TransactionStarted(1, "2"), CONFIG.settings_for("B"), TIMING, _at(3))
    # A goes down at once; B's first grant must wait: A may still draw 32 A
    assert _plan(state, 4) == {"A": ("decrease", 16.0)}
    _accept(state, "A", "1", 16, 4)
    assert "B" not in _plan(state, 5)  # accepted, not yet applied (apply_bound 5 s)
    state.review(CONFIG, TIMING, OPTIONS, _at(9.1))
    assert _plan(state, 9.1) == {"B": ("increase", 16.0)}


def test_a_reading_that_shows_the_car_follow_ends_the_wait_early() -> None:
    state = _site("A", "B")
    _accept(state, "A", "1", 32, 2)
    samples = tuple(Sample("Current.Import", 31.0, f"L{i}", "A") for i in (1, 2, 3))
    state.apply("A", MeterReading(1, "1", None, samples), CONFIG.settings_for("A"), TIMING, _at(3))
    _accept(state, "A", "1", 16, 4)
    assert state.exposure("A", 1, CONFIG.settings_for("A"), OPTIONS, _at(4.5)) == 32
    lower = tuple(Sample("Current.Import", 15.5, f"L{i}", "A") for i in (1, 2, 3))
    state.apply("A", MeterReading(1, "1", None, lower), CONFIG.settings_for("A"), TIMING, _at(5))
    assert state.exposure("A", 1, CONFIG.settings_for("A"), OPTIONS, _at(5)) == 16


def test_a_silent_charger_is_counted_at_its_max_and_a_late_answer_clears_it() -> None:
    state = _site("A", "B")
    _accept(state, "A", "1", 16, 2)
    state.call_sent("A", 1, 10.0, _at(3))
    assert state.call_late("A", _at(5))
    assert state.chargers["A"].flagged == NO_ANSWER
    assert state.exposure("A", 1, CONFIG.settings_for("A"), OPTIONS, _at(5)) == 32
    assert "A" in state.ignoring(CONFIG)
    state.call_accepted("A", 1, "1", 10.0, None, CONFIG.settings_for("A"), TIMING, _at(6))
    assert state.chargers["A"].flagged is None


def test_a_capped_car_stays_capped_while_it_draws_the_same() -> None:
    state = _site("A")
    _accept(state, "A", "1", 16, 2)
    settings = CONFIG.settings_for("A")
    for t in range(3, 40, 5):
        samples = tuple(Sample("Current.Import", 4.0, f"L{i}", "A") for i in (1, 2, 3))
        state.apply("A", MeterReading(1, "1", None, samples), settings, TIMING, _at(t))
        state.review(CONFIG, TIMING, OPTIONS, _at(t))
        if (
            state.chargers["A"].txs[1].car_estimate is not None
            and state.chargers["A"].txs[1].limit == 16
        ):
            _accept(state, "A", "1", 7, t)
    tx = state.chargers["A"].txs[1]
    assert tx.car_estimate == 7 and tx.limit == 7
    # it draws up to its cap: it wants more, the cap goes
    samples = tuple(Sample("Current.Import", 6.5, f"L{i}", "A") for i in (1, 2, 3))
    state.apply("A", MeterReading(1, "1", None, samples), settings, TIMING, _at(50))
    state.review(CONFIG, TIMING, OPTIONS, _at(50))
    assert tx.car_estimate is None


def test_a_snapshot_restores_what_a_restart_needs() -> None:
    state = _site("A", "B")
    _accept(state, "A", "1", 16, 2)
    state.call_sent("B", 1, 20.0, _at(3))  # an increase on its way counts
    state.set_dynamic_limit("grid", 40)
    back = restore(snapshot(state))
    assert snapshot(back) == snapshot(state)
    assert back.chargers["A"].txs[1].limit == 16
    assert back.chargers["B"].txs[1].limit == 20
    assert not back.chargers["A"].connected and back.chargers["A"].txs[1].refresh
    assert back.dynamic_limits == {"grid": 40}


async def test_the_load_state_repository_round_trips(store: Store) -> None:
    site = await store.sites.create("LS", "cloud")
    repo = store.loadstate
    state = _site("A")
    _accept(state, "A", "1", 16, 2)
    await repo.put(site.uid, snapshot(state))
    await repo.put(site.uid, snapshot(state))  # an update, not a second row
    saved = await repo.all()
    assert saved == {site.uid: snapshot(state)}
    assert restore(saved[site.uid]).chargers["A"].txs[1].limit == 16


async def _refused(end_first: bool) -> SiteLoadState:
    clock = ManualClock()
    state = _site("A")

    async def send(cid: str, payload: dict[str, Any]) -> Any:
        if end_first:  # the car leaves while the call is out
            ended = TransactionEnded("1", 1)
            state.apply("A", ended, CONFIG.settings_for("A"), TIMING, clock.now())
        return {"status": "Rejected"}

    ctl = SiteController("S", CONFIG, state, send, clock, OPTIONS, TIMING)
    ctl.start()
    ctl.poke()
    await clock.advance(1.0)
    await ctl.stop()
    return state


async def test_a_refusal_for_an_ended_transaction_is_not_held_against_the_charger() -> None:
    state = await _refused(end_first=True)
    assert state.chargers["A"].flagged is None and state.chargers["A"].call_since is None


async def test_a_refused_profile_flags_the_charger() -> None:
    state = await _refused(end_first=False)
    assert (state.chargers["A"].flagged or "").startswith("rejected its TxProfile")
