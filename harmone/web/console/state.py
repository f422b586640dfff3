"""The console's settings and its per-application state (rate limiter, templates)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from starlette.requests import Request

from harmone.web.console.ratelimit import LoginLimits, LoginRateLimiter

__all__ = ["ConsoleSettings", "ConsoleState", "console_state"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """Session lifetimes, sign-in limits, live-update pacing."""

    #: A session ends this long after sign-in, whatever happens.
    session_lifetime: timedelta = timedelta(hours=12)
    #: ... or after this long without a request (an open console page keeps it alive).
    session_idle: timedelta = timedelta(hours=2)
    login_limits: LoginLimits = field(default_factory=LoginLimits)
    #: A server-sent event stream ends after this long and the browser reconnects at once;
    #: this re-checks the session regularly and lets the server shut down promptly.
    stream_lifetime: float = 60.0
    #: Events arriving within this many seconds are sent together (bursts of frames).
    stream_coalesce: float = 0.2
    #: Frames shown by the message inspector.
    inspector_frames: int = 200


@dataclass(slots=True)
class ConsoleState:
    settings: ConsoleSettings
    limiter: LoginRateLimiter


def console_state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state
