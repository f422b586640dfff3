"""The message inspector's ring: bounded by frames and by bytes, whatever a charger sends."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from harmone.relay.state import FrameRecord, FrameRing

PARTIES = ("charger", "cpms", "harmone")


def test_frames_come_back_as_recorded_oldest_first() -> None:
    ring = FrameRing(max_frames=3, max_bytes=10_000)
    for i, (sender, receiver) in enumerate([("charger", "cpms"), ("cpms", "charger")] * 3):
        ring.append(float(i), sender, receiver, f'[2,"{i}","Heartbeat",{{"é":{i}}}]')  # type: ignore[arg-type]
    assert ring.records() == [
        FrameRecord(3.0, "cpms", "charger", '[2,"3","Heartbeat",{"é":3}]'),
        FrameRecord(4.0, "charger", "cpms", '[2,"4","Heartbeat",{"é":4}]'),
        FrameRecord(5.0, "cpms", "charger", '[2,"5","Heartbeat",{"é":5}]'),
    ]


def test_a_frame_larger_than_the_budget_is_kept_cut_short() -> None:
    ring = FrameRing(max_frames=10, max_bytes=100)
    ring.append(1.0, "charger", "harmone", "x" * 1000)
    (kept,) = ring.records()
    assert kept.text.startswith("xxx") and kept.text.endswith("…")
    assert ring.nbytes <= 100


@given(
    st.lists(
        st.tuples(st.sampled_from(PARTIES), st.sampled_from(PARTIES), st.text(max_size=300)),
        max_size=60,
    ),
    st.integers(1, 20),
    st.integers(64, 2000),
)
def test_never_more_frames_or_bytes_than_allowed_and_the_newest_kept(
    frames: list[tuple[str, str, str]], max_frames: int, max_bytes: int
) -> None:
    ring = FrameRing(max_frames=max_frames, max_bytes=max_bytes)
    for i, (sender, receiver, text) in enumerate(frames):
        ring.append(float(i), sender, receiver, text)  # type: ignore[arg-type]
        assert len(ring) <= max_frames and ring.nbytes <= max_bytes
    kept = ring.records()
    assert len(kept) == len(ring)
    if frames:
        newest = kept[-1]
        assert newest.at == len(frames) - 1
        sender, receiver, text = frames[-1]
        assert (newest.sender, newest.receiver) == (sender, receiver)
        assert text.startswith(newest.text.removesuffix("…"))
    assert [r.at for r in kept] == sorted(r.at for r in kept)
