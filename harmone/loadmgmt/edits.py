"""Changes to one part of a site's load-management configuration, as pure functions.

The REST API replaces a configuration as a whole; the console changes one cluster or one
charging station at a time. Each function here takes the configuration as JSON
(`SiteLoadConfig.to_json()`), returns a changed copy and never touches its argument, so that
the caller validates and stores the result as a whole (`LoadManagementService.edit`): a change
is saved completely or not at all. Structural mistakes (a name taken twice, a cluster moved
below itself, the root removed) raise `ConfigError` in words for people; the electrical rules
are checked by `parse_config` on the result, as for the REST API.

`config_version` names a configuration's content, so that a change prepared on an old copy
can be refused instead of silently undoing someone else's.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from harmone.errors import ConfigError

__all__ = [
    "MAX_DEPTH",
    "add_node",
    "config_version",
    "find_node",
    "move_node",
    "new_config",
    "node_paths",
    "remove_node",
    "reset_charger",
    "set_charger",
    "set_site_settings",
    "update_node",
]

#: `parse_config` refuses trees deeper than this (the root is level 0).
MAX_DEPTH = 8

Json = dict[str, Any]


def config_version(raw: Mapping[str, Any]) -> str:
    """A short name of this configuration's content (equal content, equal version)."""
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def new_config(root: Mapping[str, Any], enabled: bool = True, policy: str = "equal_share") -> Json:
    """A first configuration: the grid connection alone, every charger on default settings."""
    return {"enabled": enabled, "policy": policy, "tree": {**root, "children": []}}


def _walk(
    node: Json, parent: Json | None = None, depth: int = 0
) -> Iterator[tuple[Json, Json | None, int]]:
    yield node, parent, depth
    for child in node.get("children", []):
        yield from _walk(child, node, depth + 1)


def node_paths(raw: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Node id -> the ids from the root down to it, in tree order."""
    out: dict[str, tuple[str, ...]] = {}

    def visit(node: Mapping[str, Any], above: tuple[str, ...]) -> None:
        here = (*above, node["id"])
        out[node["id"]] = here
        for child in node.get("children", []):
            visit(child, here)

    visit(raw["tree"], ())
    return out


def find_node(raw: Mapping[str, Any], node_id: str) -> Json | None:
    """The node `node_id` of the configuration (not a copy), or None."""
    for node, _, _ in _walk(raw["tree"]):
        if node["id"] == node_id:
            return node
    return None


def _located(raw: Json, node_id: str) -> tuple[Json, Json | None, int]:
    for node, parent, depth in _walk(raw["tree"]):
        if node["id"] == node_id:
            return node, parent, depth
    raise ConfigError(
        f"There is no cluster {node_id!r} any more: it was removed or renamed meanwhile."
    )


def _height(node: Json) -> int:
    """Levels below `node` (0 for a node without children)."""
    return max((1 + _height(c) for c in node.get("children", [])), default=0)


def _check_new_id(raw: Json, node_id: str) -> None:
    if find_node(raw, node_id) is not None:
        raise ConfigError(f"There is already a cluster named {node_id!r}: choose another name.")
    if node_id in raw.get("chargers", {}):
        raise ConfigError(
            f"{node_id!r} is a charging station of this site: a cluster needs a name of its "
            "own, or the charging station would be in two places."
        )


def add_node(raw: Mapping[str, Any], parent_id: str, node: Mapping[str, Any]) -> Json:
    """A copy with `node` (without children) added below `parent_id`."""
    out = copy.deepcopy(dict(raw))
    parent, _, depth = _located(out, parent_id)
    _check_new_id(out, node["id"])
    if depth + 1 > MAX_DEPTH:
        raise ConfigError(
            f"A cluster below {parent_id!r} would be {depth + 1} levels deep; at most "
            f"{MAX_DEPTH} levels are allowed."
        )
    parent.setdefault("children", []).append({**node, "children": []})
    return out


def update_node(raw: Mapping[str, Any], node_id: str, fields: Mapping[str, Any]) -> Json:
    """A copy with the node's own fields (limit, safety current, imbalance, meter) replaced;
    a field given as None is removed (no meter, no imbalance limit)."""
    if "id" in fields or "children" in fields:
        raise ConfigError("A cluster's name and its place are changed by other means.")
    out = copy.deepcopy(dict(raw))
    node, _, _ = _located(out, node_id)
    for key, value in fields.items():
        if value is None:
            node.pop(key, None)
        else:
            node[key] = value
    return out


def move_node(raw: Mapping[str, Any], node_id: str, new_parent_id: str) -> Json:
    """A copy with the node (and everything below it) moved below `new_parent_id`."""
    out = copy.deepcopy(dict(raw))
    node, parent, _ = _located(out, node_id)
    if parent is None:
        raise ConfigError("The grid connection is the root of the tree: it cannot be moved.")
    target, _, depth = _located(out, new_parent_id)
    if new_parent_id in node_paths({"tree": node}):
        raise ConfigError(
            f"{node_id!r} cannot be moved below {new_parent_id!r}: that is inside {node_id!r} "
            "itself."
        )
    if target is parent:
        return out
    if depth + 1 + _height(node) > MAX_DEPTH:
        raise ConfigError(
            f"Below {new_parent_id!r}, {node_id!r} and its clusters would be more than "
            f"{MAX_DEPTH} levels deep."
        )
    parent["children"] = [c for c in parent["children"] if c["id"] != node_id]
    target.setdefault("children", []).append(node)
    return out


def remove_node(raw: Mapping[str, Any], node_id: str) -> Json:
    """A copy without the node: its clusters and charging stations move up to its parent, so
    that nothing below it is left outside the tree's limits."""
    out = copy.deepcopy(dict(raw))
    node, parent, _ = _located(out, node_id)
    if parent is None:
        raise ConfigError(
            "The grid connection is the root of the tree: it cannot be removed. Turn load "
            "management off instead."
        )
    at = next(i for i, c in enumerate(parent["children"]) if c["id"] == node_id)
    parent["children"][at : at + 1] = node.get("children", [])
    for settings in [*out.get("chargers", {}).values(), out.get("default_charger") or {}]:
        if settings.get("node") == node_id:
            settings["node"] = parent["id"]
    return out


def set_charger(raw: Mapping[str, Any], charger_id: str, settings: Mapping[str, Any]) -> Json:
    """A copy with the charging station's own settings (its place in the tree included)."""
    out = copy.deepcopy(dict(raw))
    if find_node(out, charger_id) is not None:
        raise ConfigError(
            f"{charger_id!r} is also the name of a cluster: rename the cluster first, or the "
            "charging station would be in two places."
        )
    node = settings.get("node")
    if node is not None:
        _located(out, node)
    out.setdefault("chargers", {})[charger_id] = dict(settings)
    return out


def reset_charger(raw: Mapping[str, Any], charger_id: str) -> Json:
    """A copy in which the charging station uses the site's default settings again."""
    out = copy.deepcopy(dict(raw))
    out.get("chargers", {}).pop(charger_id, None)
    return out


def set_site_settings(
    raw: Mapping[str, Any],
    enabled: bool,
    policy: str,
    continuity_horizon_minutes: float | Literal["keep"] | None = "keep",
) -> Json:
    """A copy with load management turned on or off, the sharing policy and (unless "keep")
    the continuity head start's horizon (None: off)."""
    out = copy.deepcopy(dict(raw))
    out["enabled"] = enabled
    out["policy"] = policy
    if continuity_horizon_minutes != "keep":
        out["continuity_horizon_minutes"] = continuity_horizon_minutes
    return out
