"""The web console: server-rendered pages over the same store, hub and rules as the REST API.

`install(api)` adds it to the FastAPI application: the pages, the static files, the error
pages and the security headers. Design and security model: docs/console.md.
"""

from __future__ import annotations

from harmone.web.console.setup import install
from harmone.web.console.state import ConsoleSettings

__all__ = ["ConsoleSettings", "install"]
