"""How fast load management reacts and how long it trusts what it was told."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harmone.errors import ConfigError

__all__ = ["Timing"]


@dataclass(frozen=True, slots=True)
class Timing:
    """How fast load management reacts and how long it trusts; tests compress it."""

    #: Allocation also runs this often without events (stale meters, flags, apply waits), s.
    tick: float = 5.0
    #: A car may draw above its limit this long before its charger is flagged, s.
    reaction_grace: float = 30.0
    #: Drawing this much above the limit counts as not obeying (meter noise, rounding), A.
    tolerance: float = 1.0
    #: How long HARMON-E waits for an answer to SetChargingProfile before giving up, s.
    call_timeout: float = 15.0
    #: Events within this window are handled in one round, s.
    debounce: float = 0.02
    #: After accepting a lower limit, a charger and its car may take this long to follow it
    #: (IEC 61851 gives the car 5 s); a reading at or below the new limit ends the wait early.
    apply_bound: float = 5.0
    #: A SetChargingProfile unanswered this long flags its charger ("does not answer"), s.
    answer_grace: float = 2.0
    #: A car drawing well below its limit this long is capped at its draw plus a margin, s.
    give_back_after: float = 5.0
    #: A flagged charger that failed a call is sent its safe limit again this often, s.
    retry_interval: float = 10.0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"load timing {name} must be a finite number >= 0")
        if self.tick <= 0 or self.call_timeout <= 0:
            raise ConfigError("load timing tick and call_timeout must be positive")
