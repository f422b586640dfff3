"""Live updates for console pages as server-sent events (EventSource in the browser).

Each stream subscribes to the relay registry *before* it reads the current state, so nothing
that happens in between is missed. Events that arrive together (a burst of frames) are coalesced
for `stream_coalesce` seconds and rendered once. A stream ends after `stream_lifetime`
seconds: the browser reconnects at once (the `retry` field), the session is checked again,
and a server shutting down is never kept waiting by an open page for long.

Site stream events: `snapshot` {html: every row}, `charger` {id, html: its row},
`seen` {id, last_seen}, `gone` (the site was deleted).
Charger stream events: `frames` [{at, action, html}, ...] oldest first (id: the newest
frame's time, so that a reconnecting browser gets only what it has not seen),
`state` {html, connected}, `seen`.
Connection log stream events: `log` {html: every row, newest first} on connect and whenever
the log changed, `gone`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse

from harmone.errors import NotFound
from harmone.relay.live_events import ChargerEvent
from harmone.store.records import Attempt
from harmone.web.console.frames import describe_frames
from harmone.web.console.render import render_fragment
from harmone.web.console.state import ConsoleSettings
from harmone.web.runtime import Runtime
from harmone.web.schemas import attempt_out, charger_out

__all__ = [
    "charger_stream",
    "connection_log_stream",
    "event_stream_response",
    "site_stream",
    "sse_message",
]

log = logging.getLogger(__name__)

_KEEPALIVE = 15.0
#: The charger stream also looks for new frames this often: the registry announces frames from
#: the charger, while frames from the CPMS or HARMON-E are only seen when they are recorded.
_FRAME_POLL = 1.0
#: The connection log stream reads the log this often: the registry announces connections, not
#: refused attempts. A charger connecting or leaving wakes it at once.
_LOG_POLL = 1.0
#: Rows of the connection log tab.
LOG_ROWS = 200


def sse_message(event: str, data: Any, event_id: str | None = None) -> str:
    """One event in the text/event-stream format (JSON has no raw newlines)."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return head + f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def event_stream_response(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _batches(
    queue: asyncio.Queue[ChargerEvent],
    site_uid: str,
    settings: ConsoleSettings,
    wait: float,
    *,
    at_once: bool = False,
) -> AsyncIterator[tuple[set[str], set[str]] | None]:
    """(changed charger ids, seen charger ids) of this site, coalesced; None when `wait`
    seconds pass quietly (and first of all, with `at_once`). Ends after the stream lifetime."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.stream_lifetime
    if at_once:
        yield None
    while (remaining := deadline - loop.time()) > 0:
        try:
            first = await asyncio.wait_for(queue.get(), min(wait, remaining))
        except TimeoutError:
            yield None
            continue
        await asyncio.sleep(settings.stream_coalesce)
        events = [first]
        while not queue.empty():
            events.append(queue.get_nowait())
        changed = {key[1] for kind, key in events if kind == "changed" and key[0] == site_uid}
        seen = {key[1] for kind, key in events if kind == "frame" and key[0] == site_uid}
        if changed or seen:
            yield changed, seen


async def site_stream(rt: Runtime, settings: ConsoleSettings, site_uid: str) -> AsyncIterator[str]:
    """The charging stations tab: every row again on connect, then each change."""
    async with rt.hub.subscribe() as queue:
        yield "retry: 1000\n\n"
        try:
            site = await rt.sites.get(site_uid)
            chargers = await rt.chargers.of_site(site_uid)
        except NotFound:
            yield sse_message("gone", {})
            return
        rows = [
            render_fragment(
                "partials/charger_row.html",
                c=charger_out(c, rt.hub.live_state(site_uid, c.id), site),
                site=site,
            )
            for c in chargers
        ]
        yield sse_message("snapshot", {"html": "".join(rows)})
        async for batch in _batches(queue, site_uid, settings, _KEEPALIVE):
            if batch is None:
                yield ": keepalive\n\n"
                continue
            changed, seen = batch
            site_now = await rt.sites.find(site_uid)
            if site_now is None:
                yield sse_message("gone", {})
                return
            for charger_id in sorted(changed):
                stored = await rt.chargers.find(site_uid, charger_id)
                if stored is None:
                    continue
                out = charger_out(stored, rt.hub.live_state(site_uid, charger_id), site_now)
                html = render_fragment("partials/charger_row.html", c=out, site=site_now)
                yield sse_message("charger", {"id": charger_id, "html": html})
            for charger_id in sorted(seen - changed):
                live = rt.hub.live_state(site_uid, charger_id)
                if live is not None and live.last_seen is not None:
                    yield sse_message(
                        "seen", {"id": charger_id, "last_seen": live.last_seen.isoformat()}
                    )


async def charger_stream(
    rt: Runtime,
    settings: ConsoleSettings,
    site_uid: str,
    charger_id: str,
    after: float | None,
) -> AsyncIterator[str]:
    """The charging station page: new frames for the inspector and its changing state."""
    key = (site_uid, charger_id)
    last_at = after
    async with rt.hub.subscribe() as queue:
        yield "retry: 1000\n\n"

        def new_frames() -> list[dict[str, Any]]:
            # a gateway site's charger: as its box reported them
            frames = (rt.hub.frames(*key) or rt.gateways.frames(*key))[-settings.inspector_frames :]
            described = describe_frames(frames)
            return [f for f in described if last_at is None or f["at"] > last_at]

        async def state() -> str | None:
            site = await rt.sites.find(site_uid)
            stored = await rt.chargers.find(site_uid, charger_id)
            if site is None or stored is None:
                return None
            out = charger_out(stored, rt.hub.live_state(*key), site)
            html = render_fragment("partials/charger_panels.html", c=out, site=site)
            return sse_message("state", {"html": html, "connected": out.connected})

        first = await state()
        if first is None:
            yield sse_message("gone", {})
            return
        yield first
        ticks = 0
        async for batch in _batches(queue, site_uid, settings, _FRAME_POLL):
            fresh = new_frames()
            if fresh:
                last_at = fresh[-1]["at"]
                items = [
                    {
                        "at": f["at"],
                        "action": f["action"],
                        "html": render_fragment("partials/frame.html", f=f),
                    }
                    for f in fresh
                ]
                yield sse_message("frames", items, event_id=repr(last_at))
            if batch is None:
                ticks += 1
                if ticks * _FRAME_POLL >= _KEEPALIVE:
                    ticks = 0
                    yield ": keepalive\n\n"
                continue
            changed, seen = batch
            if charger_id in changed:
                message = await state()
                if message is None:
                    yield sse_message("gone", {})
                    return
                yield message
            elif charger_id in seen:
                live = rt.hub.live_state(*key)
                if live is not None and live.last_seen is not None:
                    yield sse_message(
                        "seen", {"id": charger_id, "last_seen": live.last_seen.isoformat()}
                    )


async def connection_log_stream(
    rt: Runtime, settings: ConsoleSettings, site_uid: str
) -> AsyncIterator[str]:
    """The connection log tab: every row on connect, then again whenever the log changed."""
    shown: list[Attempt] | None = None

    async def changed_rows() -> str | None:
        """The `log` event if the log changed since it was last sent, else None."""
        nonlocal shown
        await rt.hub.flush_attempts()
        attempts = await rt.store.attempts.of_site(site_uid, LOG_ROWS)
        if attempts == shown:
            return None
        shown = attempts
        rows = [render_fragment("partials/attempt_row.html", a=attempt_out(a)) for a in attempts]
        return sse_message("log", {"html": "".join(rows)})

    async with rt.hub.subscribe() as queue:
        yield "retry: 1000\n\n"
        quiet = 0.0
        async for batch in _batches(queue, site_uid, settings, _LOG_POLL, at_once=True):
            if await rt.sites.find(site_uid) is None:
                yield sse_message("gone", {})
                return
            message = await changed_rows()
            if message is not None:
                quiet = 0.0
                yield message
            elif batch is None:
                quiet += _LOG_POLL
                if quiet >= _KEEPALIVE:
                    quiet = 0.0
                    yield ": keepalive\n\n"
