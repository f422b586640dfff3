"""A site's load over hours: the allocation rounds summarised per minute.

The controller keeps its last rounds as they were (`SiteController.series`, about an hour);
`MinuteHistory` keeps a day of one-minute summaries beside it, for charts over hours. A summary
errs on the safe side of what a person must see: per node and phase the *lowest* limit in force
during the minute and the *highest* loads; per connector the highest grant. A short peak above
a fuse, or a limit that dropped for a few seconds, therefore stays visible however far the
chart zooms out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

__all__ = ["MinuteHistory", "MinuteSummary"]

_HIGHEST = ("load", "charger_load", "non_charger_load")


class Round(Protocol):
    """One allocation round as the controller records it (`controller.Sample`)."""

    @property
    def at(self) -> datetime: ...
    @property
    def nodes(self) -> tuple[dict[str, Any], ...]: ...
    @property
    def connectors(self) -> tuple[dict[str, Any], ...]: ...


@dataclass(frozen=True, slots=True)
class MinuteSummary:
    """The rounds of one minute, dated at its start; same fields as the controller's `Sample`."""

    at: datetime
    nodes: tuple[dict[str, Any], ...]
    connectors: tuple[dict[str, Any], ...]


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _merge_node(into: dict[str, Any], node: dict[str, Any]) -> None:
    into["limit"] = min(into["limit"], node["limit"])
    for key in _HIGHEST:
        into[key] = [max(a, b) for a, b in zip(into[key], node[key], strict=True)]
    into["headroom"] = [min(a, b) for a, b in zip(into["headroom"], node["headroom"], strict=True)]


def _merge_connector(into: dict[str, Any], conn: dict[str, Any]) -> None:
    into["granted"] = max(into["granted"], conn["granted"])
    into["per_phase"] = [
        max(a, b) for a, b in zip(into["per_phase"], conn["per_phase"], strict=True)
    ]
    into["reserved"] = into["reserved"] or conn["reserved"]


def _copy(items: Iterable[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    out: dict[Any, dict[str, Any]] = {}
    for item in items:
        key = item["id"] if "id" in item else (item["charger_id"], item["connector_id"])
        out[key] = {k: list(v) if isinstance(v, list) else v for k, v in item.items()}
    return out


class MinuteHistory:
    """One-minute summaries of a site's allocation rounds, the last `minutes` of them."""

    def __init__(self, minutes: int = 24 * 60) -> None:
        self._done: deque[MinuteSummary] = deque(maxlen=minutes)
        self._at: datetime | None = None
        self._nodes: dict[Any, dict[str, Any]] = {}
        self._connectors: dict[Any, dict[str, Any]] = {}

    def add(self, sample: Round) -> None:
        """Count one round in the summary of its minute (rounds arrive in time order)."""
        minute = _minute(sample.at)
        if self._at is not None and minute > self._at:
            self._done.append(self._current())
            self._at = None
        if self._at is None:
            self._at = minute
            self._nodes = _copy(sample.nodes)
            self._connectors = _copy(sample.connectors)
            return
        for key, node in _copy(sample.nodes).items():
            if key in self._nodes:
                _merge_node(self._nodes[key], node)
            else:
                self._nodes[key] = node
        for key, conn in _copy(sample.connectors).items():
            if key in self._connectors:
                _merge_connector(self._connectors[key], conn)
            else:
                self._connectors[key] = conn

    def _current(self) -> MinuteSummary:
        assert self._at is not None
        return MinuteSummary(
            at=self._at,
            nodes=tuple(self._nodes.values()),
            connectors=tuple(self._connectors.values()),
        )

    def since(self, since: datetime | None) -> list[MinuteSummary]:
        """The summaries of the minutes that end after `since` (None: all), the minute under
        way included, oldest first; each is dated at the start of its minute."""
        out = list(self._done)
        if self._at is not None:
            out.append(self._current())
        if since is None:
            return out
        return [s for s in out if s.at + timedelta(minutes=1) > since]
