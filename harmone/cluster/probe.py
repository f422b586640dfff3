"""Is the NATS server there? Asked by `harmone serve --cluster` before it starts serving, so that
an unreachable NATS is one line on stderr and exit status 2, like an unreachable database."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from harmone.errors import HarmoneError

__all__ = ["probe_nats"]


async def probe_nats(url: str, timeout: float = 5.0) -> None:
    parts = urlsplit(url)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 4222), timeout
        )
    except (OSError, TimeoutError) as exc:
        raise HarmoneError(f"cannot reach NATS at {url}: {exc or 'no answer in time'}") from None
    writer.close()
