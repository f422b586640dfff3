"""Enforcement over real sockets: simulated chargers on 127.0.0.1 through a real HARMON-E.

Each test shows one behaviour of docs/load-management.md "Enforcement": a silent charger holds
back nobody's decrease, a starting car's first grant waits for the decreases that make room, a
car drawing less gives the rest back without flapping, a lifted limit resumes at once, and a
restart keeps cars charging at their grants.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from support import client_for, harmone_server, make_site, ocpp_url, tx_limits, wait_for

from harmone.loadmgmt.state import Timing
from harmone.services.accounts import Accounts
from harmone.sim import SimulatedCharger

CONFIG: dict[str, Any] = {
    "policy": "equal_share",
    "resend_step": 0.5,
    "min_interval": 60,
    "tree": {"id": "grid", "max_current": 64},
    "default_charger": {"max_current": 32, "phases": 3},
}
FAST = Timing(tick=0.2, call_timeout=30.0, answer_grace=0.5, apply_bound=1.0, give_back_after=1.0)


async def _charging(sim: SimulatedCharger, tag: str) -> None:
    if sim.boot_status is None:
        await sim.boot()
        await sim.status(1, "Available")
        await wait_for(lambda: sim.current_limit(1) == 0, 10)
    await sim.start_transaction(1, tag)


async def _dynamic(api: httpx.AsyncClient, uid: str, limit: float | None) -> None:
    r = await api.put(
        f"/api/v1/sites/{uid}/load-management/nodes/grid/dynamic-limit", json={"limit": limit}
    )
    assert r.status_code == 200, r.text


async def test_a_silent_charger_does_not_hold_back_the_others_decreases(tmp_path: Path) -> None:
    async with harmone_server(tmp_path, load_timing=FAST) as srv, await client_for(srv) as api:
        site, url = await make_site(srv, None)
        await api.put(f"/api/v1/sites/{site.uid}/load-management", json=CONFIG)
        sims = [SimulatedCharger(url, f"S{i}", ("1.6", "2.0.1")[i % 2]) for i in range(3)]
        async with sims[0], sims[1], sims[2]:
            silent, *others = sims
            for i, sim in enumerate(sims):
                await _charging(sim, f"TAG-{i}")
            await wait_for(lambda: all(s.current_limit(1) for s in sims), 10)
            silent.answer_profiles = False  # from now on its SetChargingProfile hangs
            before = len(silent.received_calls)
            await _dynamic(api, site.uid, 0)
            # The others are lowered to 0 A while the silent charger's call (call timeout 30 s)
            # is still unanswered: nobody waits for it.
            await wait_for(lambda: all(s.current_limit(1) == 0 for s in others), 10)
            assert len(silent.received_calls) > before
            assert silent.current_limit(1) != 0
            base = f"/api/v1/sites/{site.uid}/load-management/status"
            for _ in range(50):
                status = (await api.get(base)).json()
                if status["chargers"]["S0"]["flagged"]:
                    break
                await asyncio.sleep(0.1)
            assert status["chargers"]["S0"]["flagged"] == "does not answer its SetChargingProfile"
            assert status["decrease_time_s"]["count"] >= 2


async def test_a_lifted_limit_resumes_charging_without_waiting_min_interval(
    tmp_path: Path,
) -> None:
    async with harmone_server(tmp_path, load_timing=FAST) as srv, await client_for(srv) as api:
        site, url = await make_site(srv, None)
        await api.put(f"/api/v1/sites/{site.uid}/load-management", json=CONFIG)
        async with SimulatedCharger(url, "RES", "2.0.1") as sim:
            await _charging(sim, "TAG")
            await wait_for(lambda: sim.current_limit(1) == 32, 10)
            await _dynamic(api, site.uid, 0)
            await wait_for(lambda: sim.current_limit(1) == 0, 10)
            await _dynamic(api, site.uid, None)
            # min_interval is 60 s: the raise after a decrease is not held back by it
            await wait_for(lambda: sim.current_limit(1) == 32, 10)
            assert tx_limits(sim)[-3:] == [32, 0, 32]


async def test_a_starting_cars_first_grant_waits_for_the_decreases(tmp_path: Path) -> None:
    config = {**CONFIG, "tree": {"id": "grid", "max_current": 20}, "min_interval": 0}
    async with harmone_server(tmp_path, load_timing=FAST) as srv, await client_for(srv) as api:
        site, url = await make_site(srv, None)
        await api.put(f"/api/v1/sites/{site.uid}/load-management", json=config)
        # The cars to be lowered follow slower (0.5 s) than the new car rises (0.1 s): sent
        # together, the rise would land first and the sum would exceed the fuse.
        sims = [
            SimulatedCharger(url, f"Q{i}", ("1.6", "2.0.1")[i % 2], profile_delay=delay)
            for i, delay in enumerate((0.5, 0.5, 0.1))
        ]
        async with sims[0], sims[1], sims[2]:
            a, b, c = sims
            for s in sims:  # every TxDefaultProfile (0 A) is known before anyone charges
                await s.boot()
                await s.status(1, "Available")
            await wait_for(lambda: all(s.current_limit(1) == 0 for s in sims), 10)
            # The simulated cars follow what was in force profile_delay ago, and before any
            # profile a car may draw its max: let the 0 A defaults be that old first.
            await asyncio.sleep(0.7)
            await _charging(a, "TAG-A")
            await _charging(b, "TAG-B")
            await wait_for(lambda: a.current_limit(1) == 10 and b.current_limit(1) == 10, 10)
            samples: list[float] = []
            stop = asyncio.Event()

            async def sample() -> None:
                for _ in range(2000):  # bounded: at most 40 s
                    if stop.is_set():
                        return
                    samples.append(sum(s.simulated_current(1) for s in sims))
                    await asyncio.sleep(0.02)

            async def meter() -> None:
                wh = 0.0
                for _ in range(200):
                    if stop.is_set():
                        return
                    for s in sims:
                        if s.connectors[1].transaction_id is not None:
                            wh += 1
                            await s.meter_values(1, wh, [s.simulated_current(1)] * 3)
                    await asyncio.sleep(0.2)

            tasks = [asyncio.create_task(sample()), asyncio.create_task(meter())]
            await c.start_transaction(1, "TAG-C")
            # 20 A shared by three: 6.7 + 6.7 + 6.6
            await wait_for(lambda: all(6.6 <= s.simulated_current(1) <= 6.7 for s in sims), 15)
            stop.set()
            await asyncio.gather(*tasks)
        assert len(samples) > 10
        assert max(samples) <= 20 + 1e-6, max(samples)


async def test_a_car_drawing_less_gives_the_rest_back_and_keeps_it_given(tmp_path: Path) -> None:
    config = {**CONFIG, "tree": {"id": "grid", "max_current": 32}, "min_interval": 0}
    async with harmone_server(tmp_path, load_timing=FAST) as srv, await client_for(srv) as api:
        site, url = await make_site(srv, None)
        await api.put(f"/api/v1/sites/{site.uid}/load-management", json=config)
        small = SimulatedCharger(url, "GB-A", "1.6", max_current=4.0, min_current=0.0)
        big = SimulatedCharger(url, "GB-B", "2.0.1")
        async with small, big:
            await _charging(small, "TAG-A")
            await _charging(big, "TAG-B")
            await wait_for(lambda: big.current_limit(1) == 16, 10)
            wh = 0.0
            for _ in range(60):  # 12 s of readings every 0.2 s
                for s in (small, big):
                    wh += 1
                    await s.meter_values(1, wh, [s.simulated_current(1)] * 3)
                await asyncio.sleep(0.2)
            # The car takes 4 A: it is capped at 4 + 3 A and the other car gets the rest...
            assert small.current_limit(1) == 7 and big.current_limit(1) == 25
            # ...once: the limits went one way and stayed (no flapping).
            assert tx_limits(small)[-1] == 7 and tx_limits(small).count(16) == 1
            assert tx_limits(big) == [16, 25]
            status = (await api.get(f"/api/v1/sites/{site.uid}/load-management/status")).json()
            gb = next(c for c in status["connectors"] if c["charger_id"] == "GB-A")
            assert "car_draw" in gb["reason_kinds"]


async def test_a_restart_keeps_cars_charging_at_their_grants(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'restart.db'}"
    sim: SimulatedCharger | None = None
    async with harmone_server(tmp_path, db_url=db, load_timing=FAST) as srv:
        async with await client_for(srv) as api:
            site, url = await make_site(srv, None)
            await api.put(f"/api/v1/sites/{site.uid}/load-management", json=CONFIG)
        sim = SimulatedCharger(url, "RS", "1.6")
        await sim.connect()
        await _charging(sim, "TAG")
        await wait_for(lambda: sim is not None and sim.current_limit(1) == 32, 10)
    assert sim is not None
    await sim.wait_closed(10)
    sent_before = len(tx_limits(sim))
    async with harmone_server(tmp_path, db_url=db, load_timing=FAST) as srv:
        accounts = Accounts(srv.runtime.store)
        await accounts.create_user("rs@example.com", "correct horse battery", "admin")
        token = await accounts.create_token("rs@example.com")
        async with httpx.AsyncClient(
            base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as api:
            base = f"/api/v1/sites/{site.uid}/load-management/status"
            status = (await api.get(base)).json()
            # Known before the charger is back: its transaction and the grant it accepted.
            tx = status["chargers"]["RS"]["transactions"]["1"]
            assert tx["sent_limit"] == 32
            sim.url_base = ocpp_url(site, srv.runtime.cloud_base_url)  # a new port
            await sim.connect()
            await sim.meter_values(1, 10.0, [32.0, 32.0, 32.0])
            await wait_for(lambda: len(tx_limits(sim)) > sent_before, 10)
            assert tx_limits(sim)[sent_before:] == [32] * (len(tx_limits(sim)) - sent_before)
            assert sim.current_limit(1) == 32
        await sim.close()
