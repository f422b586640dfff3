"""The box's outbox and the cloud's exactly-once application, on both database backends:
sequence numbers never reused, a snapshot superseding its unsent predecessor, the drop
order when full, and a resent batch applied once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from harmone.clock import utcnow
from harmone.store import Store
from harmone.store.records import Attempt


def _attempt(site_uid: str, i: int) -> Attempt:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i)
    return Attempt(at, site_uid, f"CP{i}", "10.0.0.1", i % 2 == 0, None if i % 2 == 0 else "no")


async def _paired(store: Store) -> str:
    site = await store.sites.create("Depot", "gateway", gateway_host="192.0.2.1")
    await store.box.pair("https://cloud.example", "gw1", "gw_gw1_secret", site.uid, utcnow())
    return site.uid


async def test_sequence_numbers_are_never_reused_once_the_outbox_was_emptied(
    store: Store,
) -> None:
    uid = await _paired(store)
    await store.attempts.add([_attempt(uid, i) for i in range(3)])
    assert await store.box.enqueue_attempts(uid) == 3
    assert await store.box.enqueue_attempts(uid) == 0  # the cursor moved with the rows
    first = await store.box.pending(0)
    assert [e.kind for e in first] == ["attempt"] * 3
    await store.box.ack(first[-1].seq)
    assert await store.box.backlog() == 0
    await store.attempts.add([_attempt(uid, 3)])
    await store.box.enqueue_attempts(uid)
    (later,) = await store.box.pending(0)
    assert later.seq > first[-1].seq
    assert later.wire()["data"]["charge_point_id"] == "CP3"
    ident = await store.box.identity()
    assert ident is not None and ident.acked_seq == first[-1].seq


async def test_a_newer_charger_state_replaces_its_unsent_predecessor(store: Store) -> None:
    uid = await _paired(store)
    assert await store.box.enqueue_charger_states(uid, {"A": ("d1", {"id": "A", "n": 1})}) == 1
    assert await store.box.enqueue_charger_states(uid, {"A": ("d1", {"id": "A", "n": 1})}) == 0
    await store.box.enqueue_charger_states(uid, {"A": ("d2", {"id": "A", "n": 2})})
    events = await store.box.pending(0)
    assert [e.wire()["data"]["n"] for e in events] == [2]
    await store.box.forget_sent()  # a new link resends every state
    assert await store.box.enqueue_charger_states(uid, {"A": ("d2", {"id": "A", "n": 2})}) == 1


async def test_a_full_outbox_drops_frames_then_samples_and_never_the_connection_log(
    store: Store,
) -> None:
    uid = await _paired(store)
    store.box.max_rows = 5
    await store.box.enqueue_frames([{"text": f"f{i}"} for i in range(3)])
    await store.box.enqueue_frames([{"at": f"s{i}"} for i in range(2)], kind="loadsample")
    await store.attempts.add([_attempt(uid, i) for i in range(4)])
    await store.box.enqueue_attempts(uid)  # 9 rows for 5 places: 3 frames, then 1 sample go
    kinds = [e.kind for e in await store.box.pending(0)]
    assert kinds == ["loadsample", "attempt", "attempt", "attempt", "attempt"]
    await store.attempts.add([_attempt(uid, i) for i in range(4, 7)])
    await store.box.enqueue_attempts(uid)  # past the bound: only attempts are left, kept
    kinds = [e.kind for e in await store.box.pending(0, limit=100)]
    assert kinds == ["attempt"] * 7


@pytest.mark.parametrize("lost_ack", [False, True])
async def test_the_cloud_applies_each_sequence_number_once(store: Store, lost_ack: bool) -> None:
    site = await store.sites.create("Depot", "gateway", gateway_host="192.0.2.1")
    gateway = await store.gateways.redeem("nohash", "gw1", "secret", utcnow())
    assert gateway is None  # no such code
    await store.gateways.add_pairing_code(site.uid, "hash", utcnow() + timedelta(minutes=5))
    gateway = await store.gateways.redeem("hash", "gw1", "secret", utcnow())
    assert gateway is not None
    assert await store.gateways.redeem("hash", "gw2", "secret", utcnow()) is None  # one time
    batch = [(1, _attempt(site.uid, 1)), (2, None), (3, _attempt(site.uid, 3))]
    assert await store.gateways.apply_attempts("gw1", batch) == 3
    # with a lost ack the box never heard it: it resends the batch, and one more event
    fresh = (4, _attempt(site.uid, 4))
    batch = [*batch, fresh] if lost_ack else [fresh]
    assert await store.gateways.apply_attempts("gw1", batch) == 4
    log = await store.attempts.of_site(site.uid)
    assert sorted(a.charge_point_id for a in log) == ["CP1", "CP3", "CP4"]
