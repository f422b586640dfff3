"""The offline journal of one charger: durable writes before local answers, and the replay to
the CPMS — in order, one CALL at a time, with fresh ids, before live traffic.

What is journaled (see `JOURNALED`) is what the CPMS must eventually see; heartbeats and
authorisations are answered locally and not replayed. A StatusNotification replaces earlier
unsent ones of the same connector, and a BootNotification earlier boots. In 1.6 the transaction
id HARMON-E gave the charger for an offline start is mapped to the one the CPMS assigns on
replay, and the mapping is applied to every later frame both ways until the transaction stops.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from harmone.errors import FrameError, StoreError
from harmone.ocpp.events import ConnectorStatusChanged
from harmone.ocpp.framing import (
    MessageType,
    call_frame,
    decode,
    parse_envelope,
    payload_of,
    replace_id,
)
from harmone.ocpp.session import ChargerSession, Effect, Journal
from harmone.ocpp.versions import OcppVersion
from harmone.store.journal import JournalEntry, JournalRepo

__all__ = ["JOURNALED", "OfflineJournal"]

log = logging.getLogger(__name__)

JOURNALED: dict[OcppVersion, frozenset[str]] = {
    OcppVersion.V16: frozenset(
        {
            "BootNotification",
            "StatusNotification",
            "StartTransaction",
            "StopTransaction",
            "MeterValues",
            "SecurityEventNotification",
            "DataTransfer",
            "DiagnosticsStatusNotification",
            "FirmwareStatusNotification",
            "SignedFirmwareStatusNotification",
            "LogStatusNotification",
        }
    ),
    OcppVersion.V201: frozenset(
        {
            "BootNotification",
            "StatusNotification",
            "TransactionEvent",
            "MeterValues",
            "SecurityEventNotification",
            "DataTransfer",
            "NotifyEvent",
            "NotifyReport",
            "NotifyMonitoringReport",
            "NotifyChargingLimit",
            "ClearedChargingLimit",
            "NotifyEVChargingNeeds",
            "NotifyEVChargingSchedule",
            "ReportChargingProfiles",
            "NotifyCustomerInformation",
            "NotifyDisplayMessages",
            "FirmwareStatusNotification",
            "LogStatusNotification",
            "PublishFirmwareStatusNotification",
            "ReservationStatusUpdate",
        }
    ),
}
JOURNALED[OcppVersion.V21] = JOURNALED[OcppVersion.V201]

Apply = Callable[[list[Effect]], Awaitable[None]]
Record = Callable[[str], None]


def _status_key(entry: Journal, is16: bool) -> str | None:
    """Which earlier unsent entry this one makes obsolete: the latest boot and the latest
    status of each connector are all the CPMS needs to see."""
    if entry.action == "BootNotification":
        return "boot"
    for event in entry.events:
        if isinstance(event, ConnectorStatusChanged):
            if is16:
                return f"status:{event.connector_id}"
            return f"status:{event.connector_id}/{event.evse_connector}"
    return None


class OfflineJournal:
    def __init__(
        self,
        repo: JournalRepo,
        site_uid: str,
        charger_id: str,
        version: OcppVersion,
        backlog: list[JournalEntry],
    ) -> None:
        self.repo = repo
        self.site_uid = site_uid
        self.charger_id = charger_id
        self.version = version
        self.backlog: deque[JournalEntry] = deque(backlog)
        self._writes = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._ctx = f"site={site_uid} charger={charger_id}"

    @property
    def pending(self) -> int:
        return len(self.backlog) + self._writes

    async def write(self, entry: Journal) -> None:
        """Make one entry durable (raises StoreError: the caller must not answer then)."""
        self._writes += 1
        self._idle.clear()
        try:
            local_tx = (
                entry.answer.get("transactionId") if entry.action == "StartTransaction" else None
            )
            stored, replaced = await self.repo.append(
                self.site_uid,
                self.charger_id,
                entry.action,
                entry.text,
                local_tx if isinstance(local_tx, int) else None,
                _status_key(entry, self.version is OcppVersion.V16),
            )
            if replaced:
                gone = set(replaced)
                self.backlog = deque(e for e in self.backlog if e.id not in gone)
            self.backlog.append(stored)
        finally:
            self._writes -= 1
            if not self._writes:
                self._idle.set()

    async def replay(
        self,
        ws: ClientConnection,
        session: ChargerSession,
        apply: Apply,
        record: Record,
        timeout: float,
    ) -> bool:
        """Send the backlog to the CPMS, oldest first, each after the previous was answered.

        Frames the CPMS sends meanwhile go through the session as usual (its calls reach the
        charger). Returns True once the backlog is empty and no write is in flight; False if
        the link failed or the CPMS did not answer in time (what is left stays journaled).
        """
        if self.backlog:
            log.info(
                "%s replaying %d journaled message(s) to the CPMS", self._ctx, len(self.backlog)
            )
        while True:
            if not self.backlog:
                if self._writes:
                    await self._idle.wait()
                    continue
                return True
            entry = self.backlog[0]
            msg_id = "hm-r-" + uuid.uuid4().hex[:30]
            text = self._frame(entry, msg_id, session)
            try:
                await ws.send(text)
                record(text)
                answer = await self._answer(ws, msg_id, session, apply, timeout)
            except (ConnectionClosed, TimeoutError) as exc:
                log.warning(
                    "%s replay interrupted (%s); %d message(s) stay journaled",
                    self._ctx,
                    type(exc).__name__,
                    self.pending,
                )
                return False
            mapping = self._mapping(entry, answer, session)
            try:
                await self.repo.delivered(self.site_uid, self.charger_id, entry.id, mapping)
            except StoreError:
                log.exception("%s could not mark a replayed message delivered", self._ctx)
                return False
            if self.backlog and self.backlog[0] is entry:
                self.backlog.popleft()
            if entry.action == "StopTransaction":
                await self._end_mapping(entry, session)

    async def _end_mapping(self, entry: JournalEntry, session: ChargerSession) -> None:
        payload = payload_of(decode(entry.frame), parse_envelope(entry.frame))
        local = payload.get("transactionId") if isinstance(payload, dict) else None
        if isinstance(local, int) and local in session.tx_to_cpms:
            session.tx_to_charger.pop(session.tx_to_cpms.pop(local), None)
            await self.end_mapping(local)

    async def end_mapping(self, local_id: int) -> None:
        """A mapped transaction has stopped at the CPMS: forget its mapping durably."""
        try:
            await self.repo.end_tx_map(self.site_uid, self.charger_id, local_id)
        except StoreError:
            log.exception("%s could not drop the mapping of transaction %s", self._ctx, local_id)

    def _frame(self, entry: JournalEntry, msg_id: str, session: ChargerSession) -> str:
        # The payload goes out byte for byte, except a 1.6 transactionId that now has a
        # CPMS-assigned counterpart.
        if session.tx_to_cpms and entry.action in ("MeterValues", "StopTransaction"):
            env = parse_envelope(entry.frame)
            payload = payload_of(decode(entry.frame), env)
            tx = payload.get("transactionId") if isinstance(payload, dict) else None
            if isinstance(tx, int) and tx in session.tx_to_cpms:
                assert isinstance(payload, dict)
                payload["transactionId"] = session.tx_to_cpms[tx]
                return call_frame(msg_id, entry.action, payload)
        return replace_id(entry.frame, msg_id)

    async def _answer(
        self,
        ws: ClientConnection,
        msg_id: str,
        session: ChargerSession,
        apply: Apply,
        timeout: float,
    ) -> list[Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    continue
                try:
                    env = parse_envelope(message)
                except FrameError:
                    env = None
                if (
                    env is not None
                    and env.id == msg_id
                    and env.type in (MessageType.CALLRESULT, MessageType.CALLERROR)
                ):
                    # a replayed answer is HARMON-E's alone: it never reaches the charger
                    return decode(message)
                await apply(session.from_cpms(message, asyncio.get_running_loop().time()))

    def _mapping(
        self, entry: JournalEntry, answer: list[Any], session: ChargerSession
    ) -> tuple[int, int] | None:
        if answer and answer[0] == MessageType.CALLERROR:
            log.warning(
                "%s the CPMS refused the replayed %s: %s %s",
                self._ctx,
                entry.action,
                answer[2] if len(answer) > 2 else "?",
                answer[3] if len(answer) > 3 else "",
            )
            return None
        if entry.action == "StartTransaction" and entry.local_tx_id is not None:
            payload = answer[2] if len(answer) > 2 else None
            cpms_id = payload.get("transactionId") if isinstance(payload, dict) else None
            if isinstance(cpms_id, int) and not isinstance(cpms_id, bool):
                session.map_transaction(entry.local_tx_id, cpms_id)
                log.info(
                    "%s offline transaction %s is %s at the CPMS",
                    self._ctx,
                    entry.local_tx_id,
                    cpms_id,
                )
                return (entry.local_tx_id, cpms_id)
        return None
