"""The live part of the load-management tab: chart data and a server-sent event stream.

`series_json` is what the chart plots for one time range: per node and grid phase the limit in
force, the total load (building + charging stations), the charging stations' share and the
building load, from the service's time series (one point per allocation round, about the last
hour) or, for longer ranges, its per-minute summaries (lowest limit, highest loads).

`load_stream` events: `status` {nodes: {id: html}, connectors: html, summary: html, version}
after every allocation round and configuration change, rendered by the same partials as the
page; `samples` {the `series_json` shape, new points only}; `gone` when the site is deleted.
A gateway site seen from the cloud shows what its box reported (`reported_series_json`, the
gateways service's status and samples): its box runs its load management.
The allocator runs on events and at least every few seconds; the stream looks for a new round
once a second, which is what "live" needs without a subscription in the controller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from harmone.errors import NotFound
from harmone.loadmgmt.service import LoadManagementService
from harmone.web.console.loadmgmt_view import LoadView, fmt
from harmone.web.console.render import render_fragment
from harmone.web.console.sse import sse_message
from harmone.web.console.state import ConsoleSettings
from harmone.web.runtime import Runtime

__all__ = [
    "load_stream",
    "managed_by_box",
    "reported_series_json",
    "samples_json",
    "series_json",
]

log = logging.getLogger(__name__)

#: How often the stream looks for a new allocation round, s.
_POLL = 1.0
_KEEPALIVE = 15.0
#: How often the stream checks that the site still exists, in polls.
_SITE_CHECK = 5


class _Point(Protocol):
    @property
    def at(self) -> datetime: ...
    @property
    def nodes(self) -> tuple[dict[str, Any], ...]: ...


def _epoch(at: datetime) -> float:
    return round(at.timestamp(), 3)


def samples_json(samples: Sequence[_Point], resolution: str) -> dict[str, Any]:
    """Points for the chart: times (s since 1970) and per node and phase its series."""
    ids: list[str] = []
    for s in samples:
        ids.extend(n["id"] for n in s.nodes if n["id"] not in ids)
    nodes: dict[str, dict[str, Any]] = {
        node_id: {
            "limit": [],
            "load": [[], [], []],
            "chargers": [[], [], []],
            "building": [[], [], []],
        }
        for node_id in ids
    }
    for s in samples:
        here = {n["id"]: n for n in s.nodes}
        for node_id, out in nodes.items():
            n = here.get(node_id)
            out["limit"].append(n["limit"] if n else None)
            for key, source in (
                ("load", "load"),
                ("chargers", "charger_load"),
                ("building", "non_charger_load"),
            ):
                for phase in range(3):
                    out[key][phase].append(round(n[source][phase], 2) if n else None)
    return {"resolution": resolution, "t": [_epoch(s.at) for s in samples], "nodes": nodes}


def series_json(service: LoadManagementService, site_uid: str, seconds: int) -> dict[str, Any]:
    """The chart's data for the last `seconds`; rounds when they reach back that far (or when
    the per-minute summaries reach back no further), else one point per minute."""
    try:
        rounds = service.timeseries(site_uid, None, 5000)
    except NotFound:
        return {**samples_json([], "round"), "seconds": seconds}
    since = service.clock.now() - timedelta(seconds=seconds)
    minutes = service.history(site_uid, since)
    covered = not rounds or rounds[0].at <= since
    nothing_older = not minutes or minutes[0].at >= rounds[0].at - timedelta(minutes=1)
    if covered or nothing_older:
        out = samples_json([s for s in rounds if s.at > since], "round")
    else:
        out = samples_json(minutes, "minute")
    return {**out, "seconds": seconds}


async def managed_by_box(rt: Runtime, site_uid: str) -> bool:
    """A gateway site seen from the cloud: its box runs its load management and reports it."""
    site = await rt.sites.find(site_uid)
    return rt.box is None and site is not None and site.type == "gateway"


def reported_series_json(rt: Runtime, site_uid: str, seconds: int) -> dict[str, Any]:
    """`series_json` of a gateway site: the rounds its box reported (the cloud keeps the
    last 720, no per-minute summaries)."""
    since = rt.loadmgmt.clock.now() - timedelta(seconds=seconds)
    return {
        **samples_json(rt.gateways.reported_samples(site_uid, since), "round"),
        "seconds": seconds,
    }


ViewOf = Callable[[Runtime, str], Awaitable[LoadView]]


def _status_event(view: LoadView) -> str:
    nodes = {
        row.id: render_fragment("partials/lm_node_live.html", lm=view, fmt=fmt, node=row.node)
        for row in view.rows
    }
    return sse_message(
        "status",
        {
            "nodes": nodes,
            "connectors": render_fragment("partials/lm_connectors.html", lm=view, fmt=fmt),
            "summary": render_fragment("partials/lm_summary.html", lm=view, fmt=fmt),
            "version": view.version,
        },
    )


async def load_stream(
    rt: Runtime,
    settings: ConsoleSettings,
    site_uid: str,
    view_of: ViewOf,
    after: datetime | None,
) -> AsyncIterator[str]:
    """The tab's stream: the state at once, then every new round and configuration change;
    rounds after `after` (the newest point the page has), or from now on without it."""
    yield "retry: 1000\n\n"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.stream_lifetime
    last_at = after
    started = after is not None
    shown: tuple[str, datetime | None] | None = None
    polls = 0
    quiet = 0.0
    boxed = await managed_by_box(rt, site_uid)
    while loop.time() < deadline:
        if polls % _SITE_CHECK == 0 and await rt.store.sites.find(site_uid) is None:
            yield sse_message("gone", {})
            return
        polls += 1
        try:
            version = rt.loadmgmt.editing.version(site_uid)
            if boxed:
                fresh = rt.gateways.reported_samples(site_uid, last_at)
                reported = rt.gateways.reported_load(site_uid)
                # a new report, or the box going offline or coming back, changes the page
                version += repr((reported.reported_at, reported.stale) if reported else None)
            else:
                fresh = rt.loadmgmt.timeseries(site_uid, last_at, 5000)
        except NotFound:
            version, fresh = "", []
        newest = fresh[-1].at if fresh else last_at
        # The page is rendered again only when something new can be in it: a round or a change.
        if (version, newest) != shown:
            shown = (version, newest)
            yield _status_event(await view_of(rt, site_uid))
            quiet = 0.0
        if fresh:
            last_at = fresh[-1].at
            if started:
                event_id = repr(_epoch(last_at))
                yield sse_message("samples", samples_json(fresh, "round"), event_id=event_id)
                quiet = 0.0
        started = True
        if quiet >= _KEEPALIVE:
            yield ": keepalive\n\n"
            quiet = 0.0
        await asyncio.sleep(_POLL)
        quiet += _POLL
