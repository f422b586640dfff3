"""The load state reads the CPMS's profiles through the stacking resolver (issue 9 point 3):
what the allocator is told the CPMS allows, what a connector is counted at, when to plan again
and where HARMON-E's own profiles go. Pure: events and instants in, numbers out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from harmone.loadmgmt.allocate import allocate
from harmone.loadmgmt.config import parse_config
from harmone.loadmgmt.model import AllocationOptions
from harmone.loadmgmt.plan import make_plan
from harmone.loadmgmt.profiles import set_charging_profile
from harmone.loadmgmt.snapshot import restore, snapshot
from harmone.loadmgmt.state import SiteLoadState, Timing
from harmone.ocpp.events import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    ProfileRequested,
    ProfilesCleared,
    ProfileSet,
    SchedulePeriod,
    TransactionEnded,
    TransactionStarted,
    parse_charging_profile,
)
from harmone.ocpp.versions import OcppVersion

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
SETTINGS = CONFIG.settings_for("A")


def _at(t: float) -> datetime:
    return NOW + timedelta(seconds=t)


def _profile(
    pid: int,
    purpose: ProfilePurpose,
    periods: tuple[tuple[int, float], ...],
    *,
    level: int = 0,
    tx: str | None = None,
    kind: ProfileKind = ProfileKind.RELATIVE,
    start: datetime | None = None,
) -> ChargingProfile:
    schedule = ChargingSchedule("A", tuple(SchedulePeriod(s, a) for s, a in periods), None, start)
    return ChargingProfile(pid, level, purpose, kind, (schedule,), transaction_id=tx)


def _cpms(state: SiteLoadState, conn: int, profile: ChargingProfile, t: float) -> None:
    """The CPMS sends a profile through the relay and the charger accepts it."""
    state.apply("A", ProfileRequested(conn, profile, "cpms"), SETTINGS, TIMING, _at(t))
    state.apply("A", ProfileSet(conn, profile, "cpms"), SETTINGS, TIMING, _at(t))


def _harmone(state: SiteLoadState, tx: str | None, amps: float, t: float) -> None:
    """HARMON-E's own profile, at the level it chose, accepted."""
    ch = state.chargers["A"]
    purpose = "TxProfile" if tx is not None else "TxDefaultProfile"
    payload = set_charging_profile(
        ch.version, purpose, 1, amps, transaction_id=tx, stack_level=ch.stack_level
    )
    profile = parse_charging_profile(payload["csChargingProfiles"], True)
    state.call_sent("A", 1, amps if tx else None, _at(t))
    state.call_accepted("A", 1, tx, amps, profile, SETTINGS, TIMING, _at(t))


def _site() -> SiteLoadState:
    state = SiteLoadState()
    state.connected("A", OcppVersion.V16, booted=True)
    _harmone(state, None, 0.0, 0)
    return state


def _start(state: SiteLoadState, tx: str, t: float) -> None:
    state.apply("A", TransactionStarted(1, tx), SETTINGS, TIMING, _at(t))


def _grant(state: SiteLoadState, t: float) -> float:
    tree = state.tree(CONFIG)
    a = allocate(tree, state.demands(CONFIG, _at(t)), [], _at(t), options=OPTIONS)
    plan = make_plan(state, CONFIG, tree, a, TIMING, OPTIONS, _at(t))
    (call,) = plan.calls
    if call.purpose == "TxDefaultProfile":  # sent again first, at HARMON-E's new level
        _harmone(state, None, call.limit, t)
        return _grant(state, t)
    return call.limit


def test_a_tx_profile_overrides_the_cpms_zero_default() -> None:
    state = _site()
    _cpms(state, 0, _profile(1, ProfilePurpose.TX_DEFAULT, ((0, 0.0),)), 1)
    _start(state, "11", 2)
    assert state.cpms_limit("A", 1, _at(2)) == 0.0
    _cpms(state, 1, _profile(2, ProfilePurpose.TX, ((0, 16.0),), tx="11"), 3)
    assert state.cpms_limit("A", 1, _at(3)) == 16.0
    assert _grant(state, 3) == 16.0


def test_a_cpms_tx_profile_ends_with_its_transaction() -> None:
    state = _site()
    _start(state, "1", 1)
    _cpms(state, 1, _profile(7, ProfilePurpose.TX, ((0, 8.0),), tx="1"), 2)
    assert state.cpms_limit("A", 1, _at(2)) == 8.0
    state.apply("A", TransactionEnded("1", 1), SETTINGS, TIMING, _at(3))
    _start(state, "2", 4)
    assert state.cpms_limit("A", 1, _at(4)) is None
    assert _grant(state, 4) == 32.0


def test_a_tx_profile_without_transaction_id_belongs_to_the_running_one_only() -> None:
    state = _site()
    _start(state, "1", 1)
    _cpms(state, 1, _profile(7, ProfilePurpose.TX, ((0, 8.0),)), 2)
    assert state.cpms_limit("A", 1, _at(2)) == 8.0
    state.apply("A", TransactionEnded("1", 1), SETTINGS, TIMING, _at(3))
    _start(state, "2", 4)
    assert state.cpms_limit("A", 1, _at(4)) is None


def test_a_time_varying_cpms_schedule_is_followed_at_its_edges() -> None:
    state = _site()
    _start(state, "11", 1)
    # Absolute: 20 A until 09:10, then 10 A
    absolute = _profile(
        3,
        ProfilePurpose.TX_DEFAULT,
        ((0, 20.0), (600, 10.0)),
        kind=ProfileKind.ABSOLUTE,
        start=NOW,
    )
    _cpms(state, 1, absolute, 2)
    assert _grant(state, 2) == 20.0
    _harmone(state, "11", 20.0, 2)
    state.review(CONFIG, TIMING, OPTIONS, _at(30))
    assert state.next_change(CONFIG, _at(30)) == _at(600)
    assert state.cpms_limit("A", 1, _at(599)) == 20.0
    assert state.cpms_limit("A", 1, _at(600)) == 10.0
    assert _grant(state, 600) == 10.0


def test_own_profiles_go_above_the_cpms_levels_and_stay_there() -> None:
    state = _site()
    assert state.chargers["A"].stack_level == 0
    _cpms(state, 0, _profile(1, ProfilePurpose.TX_DEFAULT, ((0, 0.0),), level=2), 1)
    assert state.chargers["A"].stack_level == 3
    # a station max or a lower level does not move it
    _cpms(state, 0, _profile(2, ProfilePurpose.STATION_MAX, ((0, 20.0),), level=9), 2)
    _cpms(state, 1, _profile(3, ProfilePurpose.TX_DEFAULT, ((0, 6.0),), level=1), 3)
    assert state.chargers["A"].stack_level == 3


def test_a_station_max_caps_the_grant() -> None:
    state = _site()
    _cpms(state, 0, _profile(1, ProfilePurpose.STATION_MAX, ((0, 20.0),)), 1)
    _start(state, "11", 2)
    assert _grant(state, 2) == 20.0


def test_a_cpms_profile_leading_above_harmone_is_counted_until_harmone_leads_again() -> None:
    """Before HARMON-E has raised its level, the CPMS's higher-level 32 A TxProfile is what
    the charger applies: the connector is counted at 32 A, not at HARMON-E's 10 A."""
    state = _site()
    _start(state, "11", 1)
    _harmone(state, "11", 10.0, 2)
    assert state.exposure("A", 1, SETTINGS, OPTIONS, _at(3)) == 10.0
    _cpms(state, 1, _profile(9, ProfilePurpose.TX, ((0, 32.0),), level=4, tx="11"), 4)
    assert state.exposure("A", 1, SETTINGS, OPTIONS, _at(5)) == 32.0
    assert state.chargers["A"].stack_level == 5
    # long after the CPMS's call was answered, still: the charger applies what it accepted
    late = 4 + TIMING.call_timeout + 1
    state.review(CONFIG, TIMING, OPTIONS, _at(late))
    assert state.exposure("A", 1, SETTINGS, OPTIONS, _at(late)) == 32.0
    _harmone(state, "11", 10.0, late)  # HARMON-E's TxProfile leads again: a decrease to apply
    assert state.exposure("A", 1, SETTINGS, OPTIONS, _at(late)) == 32.0
    state.review(CONFIG, TIMING, OPTIONS, _at(late + TIMING.apply_bound))
    assert state.exposure("A", 1, SETTINGS, OPTIONS, _at(late + TIMING.apply_bound)) == 10.0


def test_a_clear_of_everything_counts_the_charger_at_its_max_until_resent() -> None:
    state = _site()
    _start(state, "11", 1)
    _harmone(state, "11", 10.0, 2)
    cleared = ProfilesCleared(None, None, None, None, "cpms")
    state.apply("A", cleared, SETTINGS, TIMING, _at(3))
    assert state.exposure("A", 1, SETTINGS, OPTIONS, _at(3)) == 32.0
    assert state.chargers["A"].txs[1].refresh


def test_the_cpms_profiles_survive_a_restart() -> None:
    state = _site()
    _cpms(state, 0, _profile(1, ProfilePurpose.TX_DEFAULT, ((0, 0.0),)), 1)
    _start(state, "11", 2)
    _cpms(state, 1, _profile(2, ProfilePurpose.TX, ((0, 16.0),), tx="11"), 3)
    again = restore(snapshot(state))
    assert again.cpms_limit("A", 1, _at(10)) == 16.0
    assert again.chargers["A"].profiles == state.chargers["A"].profiles
