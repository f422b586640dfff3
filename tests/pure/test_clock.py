"""The manual clock the simulations run on: sleepers wake at their own simulated instant, in
order, and whatever they set off without time passing has run before time moves on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop

from harmone.clock import ManualClock

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,  # shows its ready queue: settles until it is empty
    "uvloop": uvloop.new_event_loop,  # does not: settles for a fixed number of turns
}


async def _play(clock: ManualClock, chain: int) -> list[tuple[float, str]]:
    seen: list[tuple[float, str]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        seen.append((clock.monotonic(), name))
        # what a woken task does without time passing: a chain of awaits, one turn each
        for _ in range(chain):
            await asyncio.sleep(0)
        seen.append((clock.monotonic(), f"{name} done"))

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 2.0), ("a", 1.0), ("c", 5.0))]
    await clock.advance(3.0)
    assert clock.monotonic() == 3.0
    await clock.advance(3.0)
    await asyncio.gather(*tasks)
    return seen


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_sleepers_wake_in_order_at_their_instant_and_finish_before_time_moves(loop: str) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        seen = runner.run(_play(ManualClock(), chain=20))
    assert seen == [
        (1.0, "a"),
        (1.0, "a done"),
        (2.0, "b"),
        (2.0, "b done"),
        (5.0, "c"),
        (5.0, "c done"),
    ]


def test_a_long_chain_of_awaits_finishes_before_time_moves() -> None:
    # hundreds of turns: more than any fixed number the clock could have guessed
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        seen = runner.run(_play(ManualClock(), chain=500))
    assert [t for t, name in seen if name.endswith("done")] == [1.0, 2.0, 5.0]
