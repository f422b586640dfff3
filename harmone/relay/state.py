"""In-memory live state of connected chargers: what the API shows and the writer persists."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from harmone.store.records import ChargerIdentity, ChargerState

__all__ = [
    "CHARGER_TO_CPMS",
    "CHARGER_TO_HARMONE",
    "CPMS_TO_CHARGER",
    "ChargerKey",
    "FrameRecord",
    "FrameRing",
    "LiveCharger",
    "Party",
]

ChargerKey = tuple[str, str]  # (site UID, charge point identity as received)
Party = Literal["charger", "cpms", "harmone"]

_PARTIES: tuple[Party, ...] = ("charger", "cpms", "harmone")
_ROUTE = {(s, r): i * 3 + j for i, s in enumerate(_PARTIES) for j, r in enumerate(_PARTIES)}
#: The routes of the relayed frames, for `FrameRing.add` (no tuple to look up per frame).
CHARGER_TO_CPMS = _ROUTE["charger", "cpms"]
CHARGER_TO_HARMONE = _ROUTE["charger", "harmone"]
CPMS_TO_CHARGER = _ROUTE["cpms", "charger"]
# at (epoch seconds), route (sender * 3 + receiver), length of the UTF-8 text that follows
_HEAD = struct.Struct("<dBI")
_PACK = _HEAD.pack
_CUT = "…".encode()


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """One frame as the message inspector shows it."""

    at: float  # epoch seconds
    sender: Party
    receiver: Party
    text: str


class FrameRing:
    """The last frames of one charger, for the message inspector, kept as bytes.

    Bounded twice: at most `max_frames` frames and at most `max_bytes` bytes of them (the
    oldest go first; bytes an eighth of the budget at a time), so that a charger sending
    large frames costs no more memory than one sending heartbeats. Records are packed one
    after another in a single bytearray: a frame costs its UTF-8 text and 13 bytes, not the
    hundred-odd bytes of a Python object per frame.
    A frame larger than the whole budget is kept cut short, marked with "…".
    """

    __slots__ = ("_buf", "_count", "_room", "max_bytes", "max_frames")

    def __init__(self, max_frames: int = 200, max_bytes: int = 16384) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._count = 0
        #: the largest text a record can hold (0: the ring keeps nothing)
        self._room = max(0, max_bytes - _HEAD.size) if max_frames > 0 else 0

    def append(self, at: float, sender: Party, receiver: Party, text: str) -> None:
        self.add(at, _ROUTE[sender, receiver], text)

    def add(self, at: float, route: int, text: str) -> None:
        """`append` with the route as a number (`CHARGER_TO_CPMS`...): the relay's path."""
        # Runs twice per relayed call: kept to a few operations on the usual path (the
        # record's head and text go into the buffer one after the other, not joined first).
        data = text.encode()
        size = len(data)
        if size > self._room:
            if not self._room:
                return
            data = data[: max(0, self._room - 3)].decode(errors="ignore").encode() + _CUT
            size = len(data)
        buf = self._buf
        buf += _PACK(at, route, size)
        buf += data
        self._count += 1
        if self._count > self.max_frames or len(buf) > self.max_bytes:
            self._trim()

    def _trim(self) -> None:
        # The byte budget is trimmed an eighth at a time, not every frame: moving the kept
        # bytes to the front costs per trim, not per byte dropped.
        buf = self._buf
        drop, count = 0, self._count
        # drop at least this many bytes (the oldest records)
        excess = len(buf) - (self.max_bytes - self.max_bytes // 8)
        unpack, head = _HEAD.unpack_from, _HEAD.size
        # (the newest frame always stays: it alone fits the budget, cut short if need be)
        while count > self.max_frames or (count > 1 and drop < excess):
            drop += head + unpack(buf, drop)[2]
            count -= 1
        del buf[:drop]
        self._count = count

    def records(self) -> list[FrameRecord]:
        out: list[FrameRecord] = []
        pos, buf = 0, self._buf
        while pos < len(buf):
            at, route, size = _HEAD.unpack_from(buf, pos)
            pos += _HEAD.size
            text = bytes(buf[pos : pos + size]).decode(errors="replace")
            pos += size
            out.append(FrameRecord(at, _PARTIES[route // 3], _PARTIES[route % 3], text))
        return out

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return len(self._buf)


@dataclass(slots=True)
class LiveCharger:
    site_uid: str
    id: str
    ocpp_version: str | None = None
    connected: bool = False
    upstream_connected: bool = False
    #: Why the CPMS link is not up, in words a support person understands (None when up).
    upstream_error: str | None = None
    #: The secondary CPMS link (live only, not persisted): open, why not, frames dropped.
    secondary_connected: bool = False
    secondary_error: str | None = None
    secondary_dropped: int = 0
    remote_addr: str | None = None
    connected_since: datetime | None = None
    #: when the charger last sent a frame, in epoch seconds (a float per frame is cheaper to
    #: keep than a datetime; `last_seen` shows it as one)
    seen_at: float | None = None
    #: the `seen_at` last written to the database (the state writer's business)
    seen_saved: float | None = None
    identity: ChargerIdentity = field(default_factory=ChargerIdentity)
    connectors: dict[int, tuple[str, datetime]] = field(default_factory=dict)
    frames: FrameRing = field(default_factory=FrameRing)

    @property
    def last_seen(self) -> datetime | None:
        return datetime.fromtimestamp(self.seen_at, UTC) if self.seen_at is not None else None

    @last_seen.setter
    def last_seen(self, value: datetime | None) -> None:
        self.seen_at = value.timestamp() if value is not None else None

    @property
    def key(self) -> ChargerKey:
        return (self.site_uid, self.id)

    def snapshot(self) -> ChargerState:
        """What to persist: the whole live state (the store leaves None fields unchanged)."""
        return ChargerState(
            site_uid=self.site_uid,
            charger_id=self.id,
            ocpp_version=self.ocpp_version,
            connected=self.connected,
            upstream_connected=self.upstream_connected,
            last_seen=self.last_seen,
            identity=self.identity,
            connectors=dict(self.connectors),
        )
