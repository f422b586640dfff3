"""Jinja2 templates for the console: the environment, filters, and `render()`."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from harmone import __version__
from harmone.web.access import ROLE_DESCRIPTIONS
from harmone.web.console.auth import ConsoleSession

__all__ = [
    "STATIC_DIR",
    "TEMPLATES_DIR",
    "charger_path",
    "environment",
    "party_name",
    "relative",
    "render",
    "render_fragment",
]

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"

_PARTIES = {"charger": "Charger", "cpms": "CPMS", "harmone": "HARMON-E"}
# Connector statuses of OCPP 1.6 and 2.x, grouped by what a person should notice.
_STATUS_TONE = {
    "available": "ok",
    "charging": "info",
    "occupied": "busy",
    "preparing": "busy",
    "suspendedev": "busy",
    "suspendedevse": "busy",
    "finishing": "busy",
    "reserved": "busy",
    "faulted": "bad",
    "unavailable": "muted",
}


def charger_path(site_uid: str, charger_id: str) -> str:
    """The console URL of a charger. Identities are kept as received (they may contain
    percent signs), so they are percent-encoded once more for the path."""
    return f"/sites/{quote(site_uid, safe='')}/chargers/{quote(charger_id, safe='')}"


def party_name(party: str) -> str:
    return _PARTIES.get(party, party)


def relative(at: datetime | None, now: datetime | None = None) -> str:
    """'12 s ago', '3 min ago', '2 h ago', '4 d ago' (JavaScript keeps it up to date)."""
    if at is None:
        return "never"
    seconds = max(0, int(((now or datetime.now(UTC)) - at).total_seconds()))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def _iso(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _when(at: datetime | None) -> str:
    return "–" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _tone(status: str | None) -> str:
    return _STATUS_TONE.get((status or "").lower(), "muted")


@cache
def _static_version(name: str) -> str:
    """A content hash for cache busting: browsers may keep static files for a long time."""
    try:
        return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    except OSError:
        return __version__


def _static(name: str) -> str:
    return f"/static/{name}?v={_static_version(name)}"


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ago=relative, iso=_iso, when=_when, tone=_tone, party=party_name)
    env.globals.update(
        charger_path=charger_path,
        static=_static,
        version=__version__,
        role_descriptions=ROLE_DESCRIPTIONS,
    )
    return env


def render_fragment(name: str, **context: Any) -> str:
    """A partial template as a string (server-sent events carry these)."""
    return environment().get_template(name).render(**context)


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    session: ConsoleSession | None,
    status: int = 200,
) -> HTMLResponse:
    """A full page. Every page knows who is signed in (for the navigation) and the CSRF
    token its forms must carry."""
    ctx: dict[str, Any] = {
        "request": request,
        "session": session,
        "access": session.access if session else None,
        "csrf_token": session.csrf if session else "",
        "path": request.url.path,
    }
    ctx.update(context or {})
    html = environment().get_template(name).render(**ctx)
    return HTMLResponse(html, status_code=status)
