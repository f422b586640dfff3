"""Plumbing shared by the simulated charger and the simulated CPMS, both `ocpp` ChargePoints.

Typed wrappers for the untyped `ocpp` package, log adapters that carry the charger's identity,
and the few frame checks both peers make before the `ocpp` package routes a frame.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TypeVar, cast

from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.exceptions import NotSupportedError as OcppNotSupported
from ocpp.exceptions import OCPPError
from ocpp.routing import on as _ocpp_on
from ocpp.v16.enums import Action as Action16
from ocpp.v21.enums import Action as Action21
from ocpp.v201.enums import Action as Action201
from websockets.exceptions import ConnectionClosed

from harmone.clock import Clock
from harmone.errors import SimulatorError

__all__ = [
    "ContextLog",
    "FrameLog",
    "answer_unhandled",
    "call_or_closed",
    "context_prefix",
    "frame_text",
    "is_call_of",
    "is_stray_answer",
    "on",
    "timestamp",
]

_ACTIONS: dict[str, frozenset[str]] = {
    version: frozenset(str(a) for a in actions)
    for version, actions in (("1.6", Action16), ("2.0.1", Action201), ("2.1", Action21))
}

_F = TypeVar("_F", bound=Callable[..., Any])


def on(action: str) -> Callable[[_F], _F]:
    """`ocpp.routing.on` with a type, since the ocpp package ships none."""
    return cast(Callable[[_F], _F], _ocpp_on(action))


def timestamp(clock: Clock) -> str:
    # OCPP wants RFC 3339 in UTC; the Z form is what most chargers send.
    return clock.now().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class ContextLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the charger's identity (and site, when known)."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{self.extra['prefix'] if self.extra else ''}: {msg}", kwargs


class FrameLog(ContextLog):
    """Logger handed to the ocpp package, whose every frame would otherwise be an INFO line."""

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


def context_prefix(charge_point_id: str, context: Mapping[str, object] | None) -> str:
    parts = [f"{k}={v}" for k, v in (context or {}).items()]
    return " ".join([*parts, f"cp={charge_point_id}"])


def frame_text(raw: Any) -> str:
    return raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace")


def is_stray_answer(text: str, awaiting: set[str]) -> bool:
    """True for a CALLRESULT/CALLERROR whose id is not one of ours.

    The ocpp package would queue it and hand it to the next call() that waits, which then
    logs an error and waits on; dropping it keeps the one-call-at-a-time queue clean.
    """
    try:
        frame = json.loads(text)
    except ValueError:
        return False
    return (
        isinstance(frame, list)
        and len(frame) >= 2
        and frame[0] in (3, 4)
        and frame[1] not in awaiting
    )


def is_call_of(text: str, action: str) -> bool:
    try:
        frame = json.loads(text)
    except ValueError:
        return False
    return isinstance(frame, list) and len(frame) == 4 and frame[0] == 2 and frame[2] == action


async def answer_unhandled(station: Any, msg: Any) -> bool:
    """Answer a call no handler exists for with the right CallError; False if one exists.

    The ocpp package would log each of these as an ERROR with a traceback (and sends no
    answer at all for 2.1); for a simulator they are an expected, ordinary answer.
    """
    if msg.action in station.route_map:
        return False
    known = msg.action in _ACTIONS.get(station._ocpp_version, frozenset())
    error_cls = OcppNotImplemented if known else OcppNotSupported
    error = error_cls(details={"cause": f"{msg.action} is not simulated"})
    station.logger.debug("answering %s with %s", msg.action, error.code)
    await station._send(msg.create_call_error(error).to_json())
    return True


async def call_or_closed(station: Any, payload: Any, closed: asyncio.Event, **kwargs: Any) -> Any:
    """Run an ocpp `call()` but give up as soon as the connection closes.

    The ocpp package would otherwise wait its full response timeout for an answer that can no
    longer come. Raises SimulatorError for every failure, keeping the cause.
    """
    action = type(payload).__name__
    call_task = asyncio.ensure_future(station.call(payload, suppress=False, **kwargs))
    closed_task = asyncio.ensure_future(closed.wait())
    try:
        await asyncio.wait({call_task, closed_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (call_task, closed_task):
            task.cancel()
        await asyncio.gather(call_task, closed_task, return_exceptions=True)
    if call_task.cancelled():
        raise SimulatorError(f"{station.id}: connection closed before {action} was answered")
    exc = call_task.exception()
    if exc is None:
        return call_task.result()
    if isinstance(exc, OCPPError):
        raise SimulatorError(f"{station.id}: {action} failed with {exc}") from exc
    if isinstance(exc, TimeoutError):
        raise SimulatorError(f"{station.id}: {action} was not answered in time") from exc
    if isinstance(exc, ConnectionClosed):
        raise SimulatorError(f"{station.id}: connection closed while sending {action}") from exc
    raise SimulatorError(f"{station.id}: {action} failed: {exc!r}") from exc
