"""A 2.0.1 car that tells its departure (NotifyEVChargingNeeds) is favoured, over real sockets:
ocpp-package chargers (harmone.sim) on a site that HARMON-E answers itself (issue 9 point 6).

Two cars share a 32 A site. Without departures they get 16 A each. Then car A says it leaves in
an hour and needs 12 kWh (17.4 A on three phases at 230 V): least laxity first, load
management starts it, gives it what finishes it in time (times `deadline_margin`) and then as
much as it takes; car B shares what is left (here nothing above its 6 A minimum: it pauses until
A is done or B has waited `max_wait`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from support import PATIENCE, client_for, harmone_server, make_site, wait_for

from harmone.sim import SimulatedCharger

CONFIG: dict[str, Any] = {
    "policy": "equal_share",
    "resend_step": 0.5,
    "min_interval": 0,
    "tree": {"id": "grid", "max_current": 32},
    "default_charger": {"max_current": 32, "phases": 3},
}


async def test_a_car_that_tells_its_departure_is_given_what_finishes_it_in_time(
    tmp_path: Path,
) -> None:
    async with harmone_server(tmp_path) as srv, await client_for(srv) as api:
        site, url = await make_site(srv, None)
        r = await api.put(f"/api/v1/sites/{site.uid}/load-management", json=CONFIG)
        assert r.status_code == 200, r.text
        a = SimulatedCharger(url, "DEP-A", "2.0.1")
        b = SimulatedCharger(url, "DEP-B", "2.0.1")
        async with a, b:
            for sim in (a, b):
                await sim.boot()
                await sim.status(1, "Available")
            await wait_for(lambda: a.current_limit(1) == 0 and b.current_limit(1) == 0, 10)
            await a.start_transaction(1, "TAG-A")
            await b.start_transaction(1, "TAG-B")
            await wait_for(lambda: a.current_limit(1) == 16 and b.current_limit(1) == 16, 10)
            leaves = datetime.now(UTC) + timedelta(hours=1)
            answer = await a.charging_needs(
                1, departure=leaves.isoformat().replace("+00:00", "Z"), energy_wh=12_000
            )
            assert answer is not None
            needed = 12_000 / (3 * 230) * 1.2  # 20.9 A
            # (the raise waits for B's decrease to be accepted and applied)
            await wait_for(lambda: (a.current_limit(1) or 0) >= needed, PATIENCE)
            limit_a, limit_b = a.current_limit(1) or 0, b.current_limit(1) or 0
            assert limit_a > 16 > limit_b, (limit_a, limit_b)  # A is favoured
            assert limit_a + limit_b <= 32
            status = (await api.get(f"/api/v1/sites/{site.uid}/load-management/status")).json()
            assert status["nodes"][0]["limit"] == 32
