"""Warnings about a valid load-management configuration that is probably not what was meant.

A configuration that `parse_config` accepts is always safe: the allocator keeps every node's
limit on the whole path from a charger to the grid connection. Some valid configurations still
deserve a second look, and these are reported as warnings, never refused:

* **A cluster whose limit is above its parent's.** Not an error: a sub-distribution's fuse is
  often rated above its share of the main fuse (three 63 A sub-boards behind a 100 A
  connection is the reason load management exists), and the lower limit on the path always
  holds. A single cluster above the whole parent, though, can never use its own limit, which
  is worth saying (a typo such as 630 for 63 looks exactly like that).
* **A charging station allowed more than its cluster**, which it can never get.
* **A charging station whose minimum current is above its cluster's limit**: it can never
  charge, because a car is never granted between 0 A and its minimum.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from harmone.loadmgmt.config import SiteLoadConfig
from harmone.loadmgmt.model import Node

__all__ = ["ConfigAdvice", "config_advice"]


@dataclass(frozen=True, slots=True)
class ConfigAdvice:
    """One warning, about a node or a charging station (`subject`), in words for people."""

    subject: str
    message: str


def _fmt(amps: float) -> str:
    return f"{amps:g} A"


def _nodes(node: Node, parent: Node | None = None) -> Iterator[tuple[Node, Node | None]]:
    yield node, parent
    for child in node.children:
        if isinstance(child, Node):
            yield from _nodes(child, node)


def config_advice(config: SiteLoadConfig) -> tuple[ConfigAdvice, ...]:
    """Every warning about `config`, nodes in tree order first, then charging stations."""
    out: list[ConfigAdvice] = []
    nodes = {}
    for node, parent in _nodes(config.tree):
        nodes[node.id] = node
        if parent is not None and node.max_current > parent.max_current:
            out.append(
                ConfigAdvice(
                    node.id,
                    f"{node.id} allows {_fmt(node.max_current)} per phase, more than "
                    f"{parent.id} above it ({_fmt(parent.max_current)}). That is safe — the "
                    f"lower limit on the path always holds — but {node.id} can never use more "
                    f"than {_fmt(parent.max_current)}: check that this is not a typo.",
                )
            )
    for charger_id, settings in sorted(config.chargers.items()):
        node = nodes.get(settings.node or config.tree.id, config.tree)
        if settings.min_current > node.max_current:
            out.append(
                ConfigAdvice(
                    charger_id,
                    f"{charger_id} needs at least {_fmt(settings.min_current)} to charge, but "
                    f"{node.id} allows only {_fmt(node.max_current)}: it can never charge.",
                )
            )
        elif settings.max_current > node.max_current:
            out.append(
                ConfigAdvice(
                    charger_id,
                    f"{charger_id} may take {_fmt(settings.max_current)}, more than {node.id} "
                    f"allows ({_fmt(node.max_current)}): it will never get more than "
                    f"{_fmt(node.max_current)}.",
                )
            )
    return tuple(out)
