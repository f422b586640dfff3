"""Peers for the secondary CPMS tests: a scriptable raw CPMS, and a site with two backends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from support import RawCpms, make_site
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from harmone.web.serve import RunningServer

#: what a CPMS answers to a charger CALL [2, id, action, payload]: a payload, or None (silent)
Answer = Callable[[list[Any]], Any]


def tagged(name: str) -> Answer:
    """Answers every call with {"by": name} (StartTransaction with transaction id `tx`)."""

    def answer(frame: list[Any]) -> Any:
        return {"by": name}

    return answer


@dataclass
class ScriptedCpms(RawCpms):
    """A raw CPMS whose answers come from `answer`; it keeps every frame it receives, and the
    answers the charger gave to its own calls in `results` (by message id)."""

    answer: Answer = field(default_factory=lambda: tagged("cpms"))
    results: dict[str, list[Any]] = field(default_factory=dict)

    async def _serve(self, conn: ServerConnection) -> None:
        cpid = conn.request.path.rsplit("/", 1)[-1] if conn.request else "?"
        self.connects += 1
        self.conns[cpid] = conn
        self.chosen[cpid] = conn.subprotocol
        try:
            async for message in conn:
                assert isinstance(message, str)
                self.frames[cpid].append(message)
                frame = json.loads(message)
                if frame[0] == 2:
                    payload = self.answer(frame)
                    if payload is not None:
                        await conn.send(json.dumps([3, frame[1], payload]))
                elif frame[0] in (3, 4):
                    self.results[frame[1]] = frame
        except ConnectionClosed:
            pass
        finally:
            self.closed[cpid] = conn.close_code

    def calls(self, cpid: str, action: str | None = None) -> list[str]:
        """The CALL frames received from `cpid` (of `action`), exactly as received."""
        out = []
        for text in self.frames[cpid]:
            frame = json.loads(text)
            if frame[0] == 2 and (action is None or frame[2] == action):
                out.append(text)
        return out


async def two_backend_site(
    srv: RunningServer,
    primary: str | None,
    secondary: str | None,
    rule: object = "read-only",
) -> tuple[str, str]:
    """A site relayed to `primary` and mirrored to `secondary`: (site UID, OCPP URL)."""
    site, url = await make_site(srv, primary)
    changes = {"secondary_cpms_url": secondary, "secondary_rule": rule}
    await srv.runtime.sites.update(site.uid, changes)
    return site.uid, url


async def next_frame(ws: Any, timeout: float) -> list[Any]:
    return list(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
