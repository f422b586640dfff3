"""Small pure helpers of the load-management status (`LoadManagementService.status`)."""

from __future__ import annotations

import statistics

from harmone.loadmgmt.config import SiteLoadConfig
from harmone.loadmgmt.model import Node

__all__ = ["node_paths", "timing_summary"]


def timing_summary(values: list[float]) -> dict[str, float | int | None]:
    ordered = sorted(values)
    return {
        "count": len(values),
        "p50": statistics.median(values) if values else None,
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if values else None,
        "max": max(values) if values else None,
    }


def node_paths(config: SiteLoadConfig) -> dict[str, tuple[str, ...]]:
    """Node id -> the node ids from the root down to it."""
    out: dict[str, tuple[str, ...]] = {}
    stack: list[tuple[Node, tuple[str, ...]]] = [(config.tree, ())]
    while stack:
        node, above = stack.pop()
        here = (*above, node.id)
        out[node.id] = here
        stack.extend((c, here) for c in node.children if isinstance(c, Node))
    return out
