"""How a simulated charger applies charging profiles, and the current its EVs draw under them.

Profiles are stored as received; the limit in force on a connector follows OCPP's stacking
(TxProfile over TxDefaultProfile, a station-wide maximum on top), optionally as it was
`profile_delay` seconds ago, as a real car ramps late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from harmone.sim.charger_connection import ChargerConnection
from harmone.sim.charger_state import STATION_MAX, InstalledProfile

__all__ = ["ChargerProfiles"]


class ChargerProfiles(ChargerConnection):
    """Charging profiles installed, cleared and obeyed."""

    def current_limit(self, connector_id: int) -> float | None:
        """The per-phase current (A) the installed profiles allow on a connector, if any."""
        return self._limit(self.profiles, connector_id, asyncio.get_running_loop().time())

    def _limit(
        self, profiles: Sequence[InstalledProfile], connector_id: int, now: float
    ) -> float | None:
        state = self._connector(connector_id)

        def best(purposes: tuple[str, ...], target: int) -> float | None:
            found = [p for p in profiles if p.purpose in purposes and p.connector_id == target]
            if not found:
                return None
            return max(found, key=lambda p: p.stack_level).limit_amps(now, self.phases)

        limit = None
        if state.transaction_id is not None or state.starting:
            limit = best(("TxProfile",), connector_id)
        if limit is None:
            limit = best(("TxDefaultProfile",), connector_id)
        if limit is None:
            limit = best(("TxDefaultProfile",), 0)
        cap = best(STATION_MAX, 0)
        if cap is not None:
            limit = cap if limit is None else min(limit, cap)
        return limit

    def simulated_current(self, connector_id: int) -> float:
        """The per-phase current the EV on this connector draws right now."""
        state = self._connector(connector_id)
        if state.transaction_id is None or not state.operative:
            return 0.0
        limit = self._followed_limit(connector_id) if self.obey_profiles else None
        amps = self.max_current if limit is None else min(self.max_current, limit)
        # Below the IEC 61851 minimum an EV cannot charge at all.
        return amps if amps >= self.min_current else 0.0

    def _followed_limit(self, connector_id: int) -> float | None:
        """The limit the EV follows: the one in force `profile_delay` seconds ago."""
        now = asyncio.get_running_loop().time()
        if self.profile_delay <= 0:
            return self._limit(self.profiles, connector_id, now)
        then = now - self.profile_delay
        profiles: tuple[InstalledProfile, ...] = ()
        for at, snapshot in self._profile_history:
            if at > then:
                break
            profiles = snapshot
        return self._limit(profiles, connector_id, then)

    def _profiles_changed(self) -> None:
        if self.profile_delay <= 0:
            return
        now = asyncio.get_running_loop().time()
        history = self._profile_history
        history.append((now, tuple(self.profiles)))
        # The newest snapshot at least `profile_delay` old is the oldest one still followed.
        while len(history) > 1 and history[1][0] <= now - self.profile_delay:
            history.popleft()

    def _install_profile(self, connector_id: int, profile: dict[str, Any]) -> str:
        new = InstalledProfile(connector_id, profile, asyncio.get_running_loop().time())
        if connector_id != 0 and connector_id not in self.connectors:
            return "Rejected"
        if new.purpose == "TxProfile":
            state = self.connectors.get(connector_id)
            if state is None or (state.transaction_id is None and not state.starting):
                return "Rejected"  # the spec allows a TxProfile only during a transaction
        # Same id, or same purpose and stack level on the same connector: replaced (spec).
        self.profiles = [
            p
            for p in self.profiles
            if p.profile_id != new.profile_id
            and not (
                p.connector_id == connector_id
                and p.purpose == new.purpose
                and p.stack_level == new.stack_level
            )
        ]
        self.profiles.append(new)
        self._profiles_changed()
        self._log.info(
            "profile %s (%s) on connector %d: %.1f A",
            new.profile_id, new.purpose, connector_id, new.limit_amps(new.received_at, self.phases)
            or 0.0,
        )  # fmt: skip
        return "Accepted"

    def _clear_profiles(
        self, profile_id: Any, connector_id: Any, purpose: Any, stack_level: Any
    ) -> bool:
        def matches(p: InstalledProfile) -> bool:
            if profile_id is not None:
                return p.profile_id == int(profile_id)
            return (
                (connector_id is None or p.connector_id == connector_id)
                and (purpose is None or p.purpose == purpose)
                and (stack_level is None or p.stack_level == stack_level)
            )

        kept = [p for p in self.profiles if not matches(p)]
        removed = len(kept) != len(self.profiles)
        self.profiles = kept
        self._profiles_changed()
        return removed
