"""The bound on handshakes worked on at once (`RelayConfig.max_concurrent_handshakes`): more
chargers than the bound, connecting together, are all accepted, and the bound's places come
back, so that chargers connecting afterwards are accepted too."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from support import FAST_RELAY, PATIENCE, RawCpms, charger, harmone_server, make_site


async def test_first_time_chargers_beyond_the_bound_are_all_accepted_and_registered(
    tmp_path: Path,
) -> None:
    relay = dataclasses.replace(FAST_RELAY, max_concurrent_handshakes=2)
    # the CPMS takes its time over each handshake: HARMON-E's handshakes wait for it together
    async with RawCpms(accept_delay=0.1) as cpms, harmone_server(tmp_path, relay) as srv:
        site, url = await make_site(srv, cpms.url)
        together = await asyncio.wait_for(
            asyncio.gather(*(charger(f"{url}/CP-{i:02d}") for i in range(12))), 6 * PATIENCE
        )
        try:
            assert [ws.subprotocol for ws in together] == ["ocpp1.6"] * 12
            # and every place was given back: later chargers, one after the other, get in too
            for i in range(12, 16):
                ws = await asyncio.wait_for(charger(f"{url}/CP-{i:02d}"), PATIENCE)
                together.append(ws)
                assert ws.subprotocol == "ocpp1.6"
            stored = await srv.runtime.chargers.of_site(site.uid)
            assert [c.id for c in stored] == [f"CP-{i:02d}" for i in range(16)]
            assert sorted(cpms.offered) == [f"CP-{i:02d}" for i in range(16)]
        finally:
            await asyncio.gather(*(ws.close() for ws in together))
