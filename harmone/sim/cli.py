"""`harmone simulate` and `harmone simulate-cpms`: the simulators as commands.

Both stop by themselves (after `duration`) or on SIGINT/SIGTERM, closing every connection
before they return, so that a demo or a benchmark never leaves a half-open socket behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, cast

from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from harmone.errors import ConfigError, SimulatorError
from harmone.sim.charger import OcppVersion, SimulatedCharger
from harmone.sim.cpms import SimulatedCpms

__all__ = ["run_simulate", "run_simulate_cpms"]

log = logging.getLogger(__name__)

# Spread the connections of many chargers over at most this many seconds, as a fleet coming
# back after a power cut would, instead of one burst.
_MAX_STAGGER = 1.0


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into `stop` while inside the block."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or no signals on this platform: duration still applies
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@dataclass
class _Outcome:
    charge_point_id: str
    connected: bool = False
    error: str | None = None

    def line(self, sim: SimulatedCharger) -> str:
        sent = sim.sent_counts
        meters = sent["MeterValues"] + sent["TransactionEvent"]
        state = "ok" if self.connected and self.error is None else "FAILED"
        parts = [
            self.charge_point_id,
            state,
            f"subprotocol={sim.subprotocol or '-'}",
            f"boot={sim.boot_status or '-'}",
            f"heartbeats={sent['Heartbeat']}",
            f"transactions={sim.transactions_started}",
            f"meter_messages={meters}",
            f"calls_received={len(sim.received_calls)}",
        ]
        if self.error is not None:
            parts.append(f"error={self.error!r}")
        return " ".join(parts)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        # The server says why in the body (HARMON-E writes the connection-log reason there).
        body = (exc.response.body or b"").decode("utf-8", "replace").strip().splitlines()
        why = f": {body[0][:200]}" if body else ""
        return f"handshake refused with HTTP {exc.response.status_code}{why}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__


async def _unless_stopped(coro: Coroutine[Any, Any, Any], stopper: asyncio.Task[Any]) -> bool:
    """Run `coro` unless `stopper` finishes first; True if it ran to the end (errors raise)."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return False
    task.result()
    return True


async def _run_charger(
    sim: SimulatedCharger, duration: float, stop: asyncio.Event, delay: float
) -> _Outcome:
    outcome = _Outcome(sim.charge_point_id)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopper}, timeout=delay)
        if stop.is_set() or not await _unless_stopped(sim.connect(), stopper):
            outcome.error = "stopped before connecting"
            return outcome
        outcome.connected = True
        await _unless_stopped(sim.run_scenario(duration), stopper)
    except (SimulatorError, InvalidHandshake, InvalidURI, OSError, TimeoutError) as exc:
        outcome.error = _describe(exc)
        log.warning("%s: %s", sim.charge_point_id, outcome.error)
    finally:
        stopper.cancel()
        await asyncio.gather(stopper, return_exceptions=True)
        await sim.close()
    return outcome


async def run_simulate(
    *,
    url: str,
    chargers: int,
    version: str,
    prefix: str = "SIM",
    duration: float = 60.0,
    heartbeat: float = 10.0,
) -> int:
    """Run `chargers` simulated chargers against `url` for `duration` seconds.

    Prints one summary line per charger on stdout; returns 0 when every charger connected
    and finished its scenario, 1 otherwise.
    """
    if version not in ("1.6", "2.0.1"):
        raise ConfigError(f"unsupported OCPP version {version!r}")
    if chargers < 1 or duration <= 0 or heartbeat <= 0:
        raise ConfigError("--chargers, --duration and --heartbeat must be positive")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in ("ws", "wss") or not url.partition("://")[2].strip("/"):
        raise ConfigError(
            f"--url must be a site's OCPP URL (ws://… or wss://…, as the Control Hub shows "
            f"it), got {url!r}"
        )
    sims = [
        SimulatedCharger(
            url,
            f"{prefix}{i:04d}",
            cast(OcppVersion, version),
            heartbeat_interval=heartbeat,
            meter_interval=min(heartbeat, 5.0),
        )
        for i in range(1, chargers + 1)
    ]
    step = min(0.05, _MAX_STAGGER / chargers)
    log.info("starting %d OCPP %s chargers against %s for %.0f s", chargers, version, url, duration)
    stop = asyncio.Event()
    with _stop_on_signals(stop):
        outcomes = await asyncio.gather(
            *(_run_charger(sim, duration, stop, i * step) for i, sim in enumerate(sims))
        )
    for sim, outcome in zip(sims, outcomes, strict=True):
        print(outcome.line(sim), flush=True)
    ok = sum(1 for o in outcomes if o.connected and o.error is None)
    log.info("%d of %d chargers ran their scenario", ok, chargers)
    return 0 if ok == chargers else 1


def _print_message(cpid: str, action: str, payload: Any) -> None:
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    print(f"{cpid} {action} {text}", file=sys.stdout, flush=True)


async def run_simulate_cpms(host: str, port: int, duration: float | None) -> int:
    """Run a simulated CPMS, one stdout line per message received, until stopped."""
    stop = asyncio.Event()
    cpms = SimulatedCpms(host=host, port=port, on_message=_print_message, record=False)
    async with cpms:
        log.info("simulated CPMS: point chargers (or HARMON-E) at %s", cpms.url)
        with _stop_on_signals(stop), contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration):
                await stop.wait()
    return 0
