"""The pieces under the console's load-management tab, without a server: edits of the
configuration (pure), warnings about valid configurations, the per-minute history, and the
service's read-modify-write with its version check."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harmone.clock import ManualClock
from harmone.config import RelayConfig
from harmone.errors import ConfigError, Conflict, NotFound
from harmone.loadmgmt.advice import config_advice
from harmone.loadmgmt.config import parse_config
from harmone.loadmgmt.controller import Sample
from harmone.loadmgmt.edits import (
    MAX_DEPTH,
    add_node,
    config_version,
    find_node,
    move_node,
    new_config,
    node_paths,
    remove_node,
    reset_charger,
    set_charger,
    set_site_settings,
    update_node,
)
from harmone.loadmgmt.history import MinuteHistory
from harmone.loadmgmt.service import LoadManagementService
from harmone.relay.directory import StoreDirectory
from harmone.relay.registry import RelayRegistry
from harmone.web.app import open_store

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def base() -> dict[str, Any]:
    """A valid configuration as the service stores it (to_json of what was parsed)."""
    raw = {
        "tree": {
            "id": "grid",
            "max_current": 63,
            "children": [
                {
                    "id": "garage",
                    "max_current": 32,
                    "children": [{"id": "row-a", "max_current": 16}],
                },
                {"id": "office", "max_current": 20},
            ],
        },
        "chargers": {
            "CP-1": {"node": "row-a", "max_current": 16, "wiring": "L-N", "phase_rotation": ["L2"]},
            "CP-2": {"node": "garage", "max_current": 32},
        },
        "default_charger": {"node": "office", "max_current": 16},
    }
    return parse_config(raw).to_json()


def test_edits_never_change_their_argument_and_results_stay_valid() -> None:
    raw = base()
    before = copy.deepcopy(raw)
    results = [
        add_node(raw, "garage", {"id": "row-b", "max_current": 16}),
        update_node(raw, "garage", {"max_current": 40, "max_imbalance": None}),
        move_node(raw, "row-a", "office"),
        remove_node(raw, "garage"),
        set_charger(raw, "CP-3", {"node": "office", "max_current": 10}),
        reset_charger(raw, "CP-1"),
        set_site_settings(raw, False, "priority"),
    ]
    assert raw == before
    for result in results:
        parse_config(result)  # still valid as a whole


def test_add_node_below_a_parent() -> None:
    out = add_node(base(), "garage", {"id": "row-b", "max_current": 16, "safety_current": 6})
    assert node_paths(out)["row-b"] == ("grid", "garage", "row-b")
    assert find_node(out, "row-b") == {
        "id": "row-b",
        "max_current": 16,
        "safety_current": 6,
        "children": [],
    }


@pytest.mark.parametrize(
    ("parent", "node_id", "message"),
    [
        ("garage", "office", "There is already a cluster named 'office'"),
        ("garage", "grid", "There is already a cluster named 'grid'"),
        ("garage", "CP-1", "'CP-1' is a charging station of this site"),
        ("nowhere", "x", "There is no cluster 'nowhere' any more"),
    ],
)
def test_add_node_refuses_taken_names_and_missing_parents(
    parent: str, node_id: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        add_node(base(), parent, {"id": node_id, "max_current": 10})


def test_add_node_refuses_a_tree_deeper_than_parse_config_accepts() -> None:
    raw = new_config({"id": "n0", "max_current": 100})
    for level in range(1, MAX_DEPTH + 1):
        raw = add_node(raw, f"n{level - 1}", {"id": f"n{level}", "max_current": 100})
    parse_config(raw)  # the deepest tree allowed
    with pytest.raises(ConfigError, match="at most 8 levels"):
        add_node(raw, f"n{MAX_DEPTH}", {"id": "too-deep", "max_current": 100})


def test_update_node_replaces_and_removes_fields() -> None:
    raw = update_node(base(), "office", {"meter": {"host": "10.0.0.5"}, "metered": True})
    assert find_node(raw, "office")["meter"] == {"host": "10.0.0.5"}  # type: ignore[index]
    raw = update_node(raw, "office", {"meter": None, "metered": False, "max_imbalance": 6})
    office = find_node(raw, "office")
    assert office is not None and "meter" not in office and office["max_imbalance"] == 6
    with pytest.raises(ConfigError, match="changed by other means"):
        update_node(raw, "office", {"id": "renamed"})


def test_move_node_takes_its_subtree_along() -> None:
    out = move_node(base(), "garage", "office")
    paths = node_paths(out)
    assert paths["row-a"] == ("grid", "office", "garage", "row-a")
    assert parse_config(out).settings_for("CP-1").node == "row-a"  # chargers stay with it


@pytest.mark.parametrize(
    ("node_id", "target", "message"),
    [
        ("grid", "office", "cannot be moved"),
        ("garage", "row-a", "inside 'garage' itself"),
        ("garage", "garage", "inside 'garage' itself"),
        ("garage", "nowhere", "no cluster 'nowhere'"),
    ],
)
def test_move_node_refuses_impossible_moves(node_id: str, target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        move_node(base(), node_id, target)


def test_move_node_keeps_the_depth_limit() -> None:
    raw = new_config({"id": "n0", "max_current": 100})
    for level in range(1, MAX_DEPTH + 1):
        raw = add_node(raw, f"n{level - 1}", {"id": f"n{level}", "max_current": 100})
    raw = add_node(raw, "n0", {"id": "side", "max_current": 100})
    raw = add_node(raw, "side", {"id": "side-2", "max_current": 100})
    with pytest.raises(ConfigError, match="more than 8 levels deep"):
        move_node(raw, "side", f"n{MAX_DEPTH - 1}")


def test_remove_node_moves_its_children_and_chargers_up() -> None:
    out = remove_node(base(), "garage")
    paths = node_paths(out)
    assert "garage" not in paths and paths["row-a"] == ("grid", "row-a")
    assert out["chargers"]["CP-2"]["node"] == "grid"
    assert out["chargers"]["CP-1"]["node"] == "row-a"
    out = remove_node(base(), "office")
    assert out["default_charger"]["node"] == "grid"
    with pytest.raises(ConfigError, match="cannot be removed"):
        remove_node(base(), "grid")


def test_set_charger_refuses_a_charger_named_like_a_cluster_and_missing_nodes() -> None:
    with pytest.raises(ConfigError, match="also the name of a cluster"):
        set_charger(base(), "garage", {"node": "grid"})
    with pytest.raises(ConfigError, match="no cluster 'nowhere'"):
        set_charger(base(), "CP-9", {"node": "nowhere"})
    out = reset_charger(base(), "CP-1")
    assert "CP-1" not in out["chargers"]
    assert parse_config(out).settings_for("CP-1").node == "office"  # the defaults


def test_config_version_names_the_content() -> None:
    raw = base()
    assert config_version(raw) == config_version(copy.deepcopy(raw))
    assert config_version(raw) != config_version(update_node(raw, "office", {"max_current": 21}))
    reordered = dict(reversed(list(raw.items())))
    assert config_version(reordered) == config_version(raw)


# -- warnings ---------------------------------------------------------------------------------


def test_a_child_limit_above_its_parent_is_a_warning_not_an_error() -> None:
    raw = update_node(base(), "row-a", {"max_current": 40})
    config = parse_config(raw)  # accepted: the parent's limit holds on the path
    advice = config_advice(config)
    assert [a.subject for a in advice] == ["row-a"]
    assert "row-a allows 40 A per phase, more than garage above it (32 A)" in advice[0].message
    assert "never use more than 32 A" in advice[0].message


def test_warnings_about_chargers_that_can_never_get_what_they_are_allowed() -> None:
    raw = set_charger(base(), "CP-3", {"node": "row-a", "max_current": 32})
    raw = set_charger(raw, "CP-4", {"node": "row-a", "max_current": 32, "min_current": 20})
    by_subject = {a.subject: a.message for a in config_advice(parse_config(raw))}
    assert by_subject["CP-3"] == (
        "CP-3 may take 32 A, more than row-a allows (16 A): it will never get more than 16 A."
    )
    assert "CP-4 needs at least 20 A to charge, but row-a allows only 16 A" in by_subject["CP-4"]
    assert config_advice(parse_config(base())) == ()


# -- per-minute history -------------------------------------------------------------------------


def sample(at: datetime, limit: float, load: list[float], granted: float) -> Sample:
    return Sample(
        at=at,
        nodes=(
            {
                "id": "grid",
                "limit": limit,
                "load": load,
                "charger_load": [granted, granted, granted],
                "non_charger_load": [x - granted for x in load],
                "headroom": [limit - x for x in load],
            },
        ),
        connectors=(
            {
                "charger_id": "CP-1",
                "connector_id": 1,
                "granted": granted,
                "per_phase": [granted] * 3,
                "reserved": False,
            },
        ),
    )


def test_history_keeps_the_lowest_limit_and_the_highest_loads_of_each_minute() -> None:
    history = MinuteHistory(minutes=2)
    history.add(sample(T0, 63, [20, 30, 10], 10))
    history.add(sample(T0 + timedelta(seconds=20), 40, [25, 10, 10], 8))
    history.add(sample(T0 + timedelta(seconds=50), 63, [10, 10, 40], 16))
    [minute] = history.since(None)  # the minute under way is included
    grid = minute.nodes[0]
    assert minute.at == T0
    assert grid["limit"] == 40
    assert grid["load"] == [25, 30, 40]
    assert grid["headroom"] == [15, 30, 23]  # the least room of the minute
    assert minute.connectors[0]["granted"] == 16
    history.add(sample(T0 + timedelta(seconds=70), 50, [5, 5, 5], 0))
    history.add(sample(T0 + timedelta(seconds=130), 50, [5, 5, 5], 0))
    history.add(sample(T0 + timedelta(seconds=190), 50, [5, 5, 5], 0))
    minutes = history.since(None)
    assert [m.at for m in minutes] == [T0 + timedelta(minutes=k) for k in (1, 2, 3)]
    assert [m.at for m in history.since(T0 + timedelta(minutes=2, seconds=30))] == [
        T0 + timedelta(minutes=2),
        T0 + timedelta(minutes=3),
    ]


@given(
    st.lists(
        st.tuples(
            st.integers(0, 600),
            st.floats(0, 100),
            st.lists(st.floats(0, 100), min_size=3, max_size=3),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_history_never_hides_a_low_limit_or_a_high_load(
    rounds: list[tuple[int, float, list[float]]],
) -> None:
    history = MinuteHistory()
    ordered = sorted(rounds, key=lambda r: r[0])
    for seconds, limit, load in ordered:
        history.add(sample(T0 + timedelta(seconds=seconds), limit, load, 0))
    minutes = {m.at: m.nodes[0] for m in history.since(None)}
    for seconds, limit, load in ordered:
        summary = minutes[(T0 + timedelta(seconds=seconds)).replace(second=0)]
        assert summary["limit"] <= limit
        assert all(s >= x for s, x in zip(summary["load"], load, strict=True))


# -- the service's edit ---------------------------------------------------------------------------


async def test_service_edit_is_all_or_nothing_and_refuses_stale_versions(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'lm.db'}")
    configs = store.loadconfig
    service = LoadManagementService(
        RelayRegistry(StoreDirectory(store), RelayConfig()), configs, None, ManualClock(T0)
    )
    try:
        site = await store.sites.create("Depot", "cloud")
        with pytest.raises(NotFound):
            await service.edit(site.uid, lambda raw: raw)
        await service.configure(site.uid, base())
        version = config_version(service.config(site.uid).to_json())
        # an invalid result is refused and nothing is stored
        with pytest.raises(ConfigError, match="safety_current is above its max_current"):
            await service.edit(
                site.uid, lambda raw: update_node(raw, "office", {"safety_current": 30}), version
            )
        assert (await configs.all())[site.uid] == base()
        config = await service.edit(
            site.uid, lambda raw: update_node(raw, "office", {"max_current": 25}), version
        )
        assert (
            (await configs.all())[site.uid]
            == config.to_json()
            == service.config(site.uid).to_json()
        )
        # a change prepared on the old version would undo that one: refused
        with pytest.raises(Conflict, match="changed meanwhile"):
            await service.edit(
                site.uid, lambda raw: update_node(raw, "office", {"max_current": 18}), version
            )
        stored = (await configs.all())[site.uid]
        assert find_node(stored, "office")["max_current"] == 25  # type: ignore[index]
    finally:
        await service.stop()
        await store.close()
