"""`last_seen` reaches the database without the relay telling the writer at every frame: the
state writer finds the chargers whose frames moved it, every `seen_interval`."""

from __future__ import annotations

from datetime import UTC, datetime

from harmone.relay.directory import StoreDirectory
from harmone.relay.state import ChargerKey, LiveCharger
from harmone.relay.state_writer import StateWriter
from harmone.store import Store

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


async def test_last_seen_is_written_every_seen_interval_for_the_chargers_that_sent_frames(
    store: Store,
) -> None:
    site = await store.sites.create("Depot", "cloud", cpms_url="ws://cpms.example/ocpp")
    await store.chargers.register(site.uid, "CP-1")
    await store.chargers.register(site.uid, "CP-2")
    live: dict[ChargerKey, LiveCharger] = {
        (site.uid, cid): LiveCharger(site.uid, cid) for cid in ("CP-1", "CP-2")
    }
    now = [1000.0]
    writer = StateWriter(StoreDirectory(store), live.get, lambda: now[0], 100, live.values)

    async def stored_last_seen(charger_id: str) -> datetime | None:
        return (await store.chargers.get(site.uid, charger_id)).last_seen

    # a frame from CP-1 (the relay only stamps its live state)
    live[site.uid, "CP-1"].seen_at = T0.timestamp()
    await writer.flush()
    assert await stored_last_seen("CP-1") is None  # not before seen_interval

    now[0] += StateWriter.seen_interval
    await writer.flush()
    assert await stored_last_seen("CP-1") == T0
    assert await stored_last_seen("CP-2") is None  # it sent nothing

    # later frames: written at the next interval, not before
    live[site.uid, "CP-1"].seen_at = T0.timestamp() + 30
    live[site.uid, "CP-2"].seen_at = T0.timestamp() + 40
    now[0] += 1
    await writer.flush()
    assert await stored_last_seen("CP-1") == T0
    now[0] += StateWriter.seen_interval
    await writer.flush()
    assert (await stored_last_seen("CP-1")).timestamp() == T0.timestamp() + 30  # type: ignore[union-attr]
    assert (await stored_last_seen("CP-2")).timestamp() == T0.timestamp() + 40  # type: ignore[union-attr]

    # stopping writes whatever moved since, at once
    live[site.uid, "CP-2"].seen_at = T0.timestamp() + 50
    await writer.flush(everything=True)
    assert (await stored_last_seen("CP-2")).timestamp() == T0.timestamp() + 50  # type: ignore[union-attr]
