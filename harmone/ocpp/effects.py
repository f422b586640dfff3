"""What the sans-I/O `ChargerSession` asks its adapter to do: the effects of one input.

Values only; `harmone.ocpp.session` re-exports them, so either import works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harmone.errors import OcppError
from harmone.ocpp.events import Event
from harmone.ocpp.framing import MessageType

__all__ = [
    "CloseCharger",
    "CpmsSilent",
    "Direction",
    "Effect",
    "Journal",
    "Note",
    "Observe",
    "OwnCallResult",
    "SessionLimits",
    "ToCharger",
    "ToCpms",
    "ToSecondary",
    "TxMapEnded",
]

Direction = Literal["charger", "cpms", "harmone"]


@dataclass(slots=True)  # not frozen: two are made per relayed frame, and frozen costs
class ToCharger:
    """A frame for the charger: the CPMS's (relayed) or HARMON-E's own (a local answer, a
    CallError, one of its own calls)."""

    text: str
    origin: Literal["cpms", "harmone", "secondary"] = "harmone"


@dataclass(slots=True)  # not frozen: two are made per relayed frame, and frozen costs
class ToCpms:
    text: str


@dataclass(slots=True)
class ToSecondary:
    """A frame for the secondary CPMS: a copy of a charger's call, or the charger's answer
    to one of the secondary's calls (never anything of HARMON-E's own)."""

    text: str


@dataclass(frozen=True, slots=True)
class OwnCallResult:
    """The outcome of one of HARMON-E's own calls: a payload, or an error."""

    id: str
    payload: Any = None
    error: OcppError | None = None
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class Observe:
    """A watched frame and what it means: a CALL of a watched action or the answer to one.

    `sender` is who sent this frame; `action` is the action of the CALL it is or answers;
    `events` are its meaning (`harmone.ocpp.events`), decoded and validated here, once.
    """

    sender: Direction
    type: MessageType
    action: str
    text: str
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class Note:
    """Something the adapter should log (and may count)."""

    level: int
    message: str


@dataclass(frozen=True, slots=True)
class CloseCharger:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Journal:
    """A charger call answered locally that the CPMS must still receive (offline journal).

    Emitted *before* the local answer: the adapter makes it durable first, so that nothing the
    charger was told is lost if HARMON-E dies right after answering.
    """

    action: str
    text: str
    answer: dict[str, Any]
    #: What the call and HARMON-E's answer mean (empty for actions HARMON-E does not watch).
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class TxMapEnded:
    """A 1.6 transaction whose local id was mapped to the CPMS's has been stopped."""

    local_id: int


@dataclass(frozen=True, slots=True)
class CpmsSilent:
    """The CPMS left a charger call unanswered for the call timeout: it is treated as away
    (the adapter closes its link and redials; the session already answered the charger)."""

    action: str
    id: str


Effect = (
    ToCharger
    | ToCpms
    | ToSecondary
    | OwnCallResult
    | Observe
    | Note
    | CloseCharger
    | Journal
    | TxMapEnded
    | CpmsSilent
)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """How long and how much a session tolerates (`ChargerSession`)."""

    call_timeout: float = 30.0
    flood_rate: float = 50.0
    flood_burst: int = 200
    #: How many unanswered charger->CPMS calls are remembered (for observation and for the
    #: local answer when the link drops). Beyond it the oldest are forgotten.
    remembered_calls: int = 64
