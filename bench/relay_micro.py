"""The relay's own Python work per relayed call, without sockets: where the microseconds go.

    python bench/relay_micro.py [--calls 200000] [--profile]

Drives one `ChargerLink` (a real `RelayRegistry` as its host, a real `ChargerSession`, two
`TextSocket`s over a transport that only keeps what it was given) with a closed loop of
MeterValues calls from the charger and the CPMS's answers, as `bench/relay_bench.py` does over
real sockets, and prints the CPU microseconds per relayed call (both frames) spent in HARMON-E's
own code: the session, the link, the inspector, the registry, the metrics. The sockets, picows
and the event loop are what the end-to-end benchmark adds. `--profile` runs it under cProfile
and prints the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any

from picows import WSMsgType

from harmone.clock import SystemClock
from harmone.config import RelayConfig
from harmone.ocpp.session import ChargerSession, SessionLimits
from harmone.ocpp.standalone import StandaloneResponder
from harmone.ocpp.versions import OcppVersion
from harmone.relay.link import ChargerLink, LinkServices, LinkSetup
from harmone.relay.registry import OWN_ACTIONS, RelayRegistry
from harmone.relay.websocket import TextSocket

METER = (
    '{"connectorId":1,"transactionId":42,"meterValue":[{"timestamp":"2026-11-24T10:00:00Z",'
    '"sampledValue":[{"value":"1234.5","measurand":"Energy.Active.Import.Register",'
    '"unit":"Wh"}]}]}'
)


class KeptTransport:
    """Stands in for a picows transport: keeps the last message it was given."""

    is_client_side = True
    is_close_frame_sent = False

    def __init__(self) -> None:
        self.last: Any = None

    def send(self, kind: WSMsgType, data: Any) -> None:
        self.last = data


def build() -> tuple[ChargerLink, TextSocket, TextSocket, KeptTransport, KeptTransport]:
    config = RelayConfig(flood_rate=1e9, flood_burst=10**9)
    clock = SystemClock()
    registry = RelayRegistry(None, config, clock)  # type: ignore[arg-type]  # never asked
    services = LinkServices(registry, registry.dialer, config, clock, registry.metrics)
    live = registry.live_for(("SITE", "CP1"))
    session = ChargerSession(
        OcppVersion.V16,
        local_answer=StandaloneResponder(clock, lambda: 1).answer,
        watched=OWN_ACTIONS,
        limits=SessionLimits(flood_rate=1e9, flood_burst=10**9),
        upstream_up=True,
        now=clock.monotonic(),
    )
    to_charger, to_cpms = KeptTransport(), KeptTransport()
    charger = TextSocket(1 << 20, clock.monotonic)
    cpms = TextSocket(1 << 20, clock.monotonic)
    charger.transport = to_charger  # type: ignore[assignment]
    cpms.transport = to_cpms  # type: ignore[assignment]
    link = ChargerLink(services, LinkSetup("ocpp1.6", "ws://cpms"), live, session, charger)
    link._adopt(cpms)
    charger.attach(link)
    return link, charger, cpms, to_charger, to_cpms


def run(calls: int) -> float:
    link, charger, cpms, to_charger, to_cpms = build()
    calls_text = [f'[2,"{i}","MeterValues",{METER}]' for i in range(1000)]
    answers = [f'[3,"{i}",{{}}]' for i in range(1000)]
    on_text = link.on_text
    start = time.process_time()
    for n in range(calls):
        i = n % 1000
        on_text(charger, calls_text[i])
        assert to_cpms.last is calls_text[i] or to_cpms.last == calls_text[i]
        on_text(cpms, answers[i])
    elapsed = time.process_time() - start
    assert to_charger.last == answers[(calls - 1) % 1000]
    return elapsed / calls * 1e6


async def main_async(args: argparse.Namespace) -> None:
    run(min(args.calls, 20000))  # warm-up
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run(args.calls)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    best = min(run(args.calls) for _ in range(args.repeat))
    print(f"HARMON-E's own code per relayed MeterValues call (both frames): {best:.2f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
