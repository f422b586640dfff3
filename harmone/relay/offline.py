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
from collections.abc import Awaitable, Callable
from typing import Protocol

from harmone.errors import FrameError, StoreError
from harmone.ocpp.events import ConnectorStatusChanged, TransactionStarted
from harmone.ocpp.framing import MessageType, parse_envelope, replace_id, swap_int_member
from harmone.ocpp.session import TX_ID_PATH, ChargerSession, Journal
from harmone.ocpp.versions import OcppVersion
from harmone.store.journal import JournalEntry

__all__ = ["JOURNALED", "JournalStorage", "OfflineJournal", "ReplayInterrupted"]

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


class JournalStorage(Protocol):
    """What the offline journal needs from storage (the store's `JournalRepo` satisfies it):
    the relay depends on this, not on how the store is split."""

    async def append(
        self,
        site_uid: str,
        charger_id: str,
        action: str,
        frame: str,
        local_tx_id: int | None = None,
        status_key: str | None = None,
    ) -> tuple[JournalEntry, list[int]]: ...

    async def backlog(
        self, site_uid: str, charger_id: str
    ) -> tuple[list[JournalEntry], dict[int, int]]: ...

    async def chargers_with_backlog(self) -> set[tuple[str, str]]: ...

    async def delivered(
        self,
        site_uid: str,
        charger_id: str,
        entry_id: int,
        tx_map: tuple[int, int] | None = None,
    ) -> None: ...

    async def end_tx_map(self, site_uid: str, charger_id: str, local_id: int) -> None: ...


Send = Callable[[str], bool]
Record = Callable[[str], None]
EndMapping = Callable[[int], Awaitable[None]]


class ReplayInterrupted(Exception):
    """The CPMS link dropped while a replayed call awaited its answer."""


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
    """One charger's journal. The link feeds it the CPMS's frames while it replays
    (`take_answer`), so that the answers to replayed calls never reach the charger."""

    def __init__(
        self,
        repo: JournalStorage,
        site_uid: str,
        charger_id: str,
        version: OcppVersion,
        backlog: list[JournalEntry],
        journaled: set[tuple[str, str]] | None = None,
    ) -> None:
        self.repo = repo
        #: the endpoint's index of chargers with a backlog: a write adds this one
        self._journaled = journaled
        self.site_uid = site_uid
        self.charger_id = charger_id
        self.version = version
        self.backlog: list[JournalEntry] = list(backlog)
        self._writes = 0
        #: completed when the writes in flight are done (made only when waited for)
        self._idle: asyncio.Future[None] | None = None
        self._ctx = f"site={site_uid} charger={charger_id}"
        #: the id of the replayed call awaiting its answer, and where the answer goes
        self._awaiting: tuple[str, asyncio.Future[str]] | None = None

    @property
    def pending(self) -> int:
        return len(self.backlog) + self._writes

    @property
    def replaying(self) -> bool:
        return self._awaiting is not None

    async def write(self, entry: Journal) -> None:
        """Make one entry durable (raises StoreError: the caller must not answer then)."""
        self._writes += 1
        if self._journaled is not None:
            self._journaled.add((self.site_uid, self.charger_id))
        try:
            stored, replaced = await self.repo.append(
                self.site_uid,
                self.charger_id,
                entry.action,
                entry.text,
                _local_transaction(entry),
                _status_key(entry, self.version is OcppVersion.V16),
            )
            if replaced:
                gone = set(replaced)
                self.backlog = [e for e in self.backlog if e.id not in gone]
            self.backlog.append(stored)
        finally:
            self._writes -= 1
            if not self._writes and self._idle is not None and not self._idle.done():
                self._idle.set_result(None)

    def take_answer(self, text: str) -> bool:
        """True if `text` answers the replayed call in flight (it is then consumed here)."""
        awaiting = self._awaiting
        if awaiting is None:
            return False
        try:
            env = parse_envelope(text)
        except FrameError:
            return False
        if env.id != awaiting[0] or env.type not in (
            MessageType.CALLRESULT,
            MessageType.CALLERROR,
        ):
            return False
        if not awaiting[1].done():
            awaiting[1].set_result(text)
        return True

    def link_lost(self) -> None:
        """The CPMS link dropped: a replayed call in flight will not be answered."""
        if self._awaiting is not None and not self._awaiting[1].done():
            self._awaiting[1].set_exception(ReplayInterrupted())

    async def replay(
        self,
        send: Send,
        session: ChargerSession,
        record: Record,
        timeout: float,
    ) -> bool:
        """Send the backlog to the CPMS, oldest first, each after the previous was answered.

        Frames the CPMS sends meanwhile go through the session as usual (the link passes
        them on unless `take_answer` consumed them). Returns True once the backlog is empty
        and no write is in flight; False if the link failed or the CPMS did not answer in
        time (what is left stays journaled).
        """
        if self.backlog:
            log.info(
                "%s replaying %d journaled message(s) to the CPMS", self._ctx, len(self.backlog)
            )
        loop = asyncio.get_running_loop()
        while True:
            if not self.backlog:
                if self._writes:
                    if self._idle is None or self._idle.done():
                        self._idle = asyncio.get_running_loop().create_future()
                    await asyncio.shield(self._idle)
                    continue
                return True
            entry = self.backlog[0]
            msg_id = "hm-r-" + uuid.uuid4().hex[:30]
            text, ended = self._frame(entry, msg_id, session)
            answer: asyncio.Future[str] = loop.create_future()
            self._awaiting = (msg_id, answer)
            try:
                if not send(text):
                    raise ReplayInterrupted()
                record(text)
                async with asyncio.timeout(timeout):
                    reply = await answer
            except ReplayInterrupted:
                log.warning(
                    "%s replay interrupted (link lost); %d message(s) stay journaled",
                    self._ctx,
                    self.pending,
                )
                return False
            except TimeoutError:
                # Sent on an open link and not answered: the CPMS has it, so it is not sent
                # again (never delivered twice); the CPMS counts as away.
                log.warning(
                    "%s the CPMS did not answer the replayed %s within %g s; it is not sent "
                    "again; %d message(s) stay journaled",
                    self._ctx,
                    entry.action,
                    timeout,
                    self.pending - 1,
                )
                await self._drop(entry)
                return False
            finally:
                self._awaiting = None
            mapping = self._mapping(entry, reply, session)
            try:
                await self.repo.delivered(self.site_uid, self.charger_id, entry.id, mapping)
            except StoreError:
                log.exception("%s could not mark a replayed message delivered", self._ctx)
                return False
            if self.backlog and self.backlog[0] is entry:
                self.backlog.pop(0)
            if ended is not None:
                session.tx_to_charger.pop(session.tx_to_cpms.pop(ended, -1), None)
                await self.end_mapping(ended)

    async def _drop(self, entry: JournalEntry) -> None:
        try:
            await self.repo.delivered(self.site_uid, self.charger_id, entry.id, None)
        except StoreError:
            log.exception("%s could not drop an unanswered replayed message", self._ctx)
            return
        if self.backlog and self.backlog[0] is entry:
            self.backlog.pop(0)

    async def end_mapping(self, local_id: int) -> None:
        """A mapped transaction has stopped at the CPMS: forget its mapping durably."""
        try:
            await self.repo.end_tx_map(self.site_uid, self.charger_id, local_id)
        except StoreError:
            log.exception("%s could not drop the mapping of transaction %s", self._ctx, local_id)

    def _frame(
        self, entry: JournalEntry, msg_id: str, session: ChargerSession
    ) -> tuple[str, int | None]:
        """The frame to replay, byte for byte the charger's except its message id and a 1.6
        transactionId that now has a CPMS-assigned counterpart (rewritten in place); and the
        local transaction a replayed StopTransaction ends."""
        text = replace_id(entry.frame, msg_id)
        path = TX_ID_PATH.get(entry.action)
        if not session.tx_to_cpms or path is None or entry.action not in _REPLAY_MAPPED:
            return text, None
        swapped = swap_int_member(text, path, session.tx_to_cpms)
        if swapped is None:
            return text, None
        text, local = swapped
        return text, local if entry.action == "StopTransaction" else None

    def _mapping(
        self, entry: JournalEntry, answer: str, session: ChargerSession
    ) -> tuple[int, int] | None:
        env = parse_envelope(answer)
        if env.type is MessageType.CALLERROR:
            log.warning(
                "%s the CPMS refused the replayed %s: %s",
                self._ctx,
                entry.action,
                env.action or "?",
            )
            return None
        if entry.action != "StartTransaction" or entry.local_tx_id is None:
            return None
        cpms_id = session.started_transaction(answer)
        if cpms_id is None:
            return None
        session.map_transaction(entry.local_tx_id, cpms_id)
        log.info(
            "%s offline transaction %s is %s at the CPMS", self._ctx, entry.local_tx_id, cpms_id
        )
        return (entry.local_tx_id, cpms_id)


#: Replayed 1.6 calls whose transactionId may need the CPMS's id.
_REPLAY_MAPPED = frozenset({"MeterValues", "StopTransaction"})


def _local_transaction(entry: Journal) -> int | None:
    """The transaction id HARMON-E gave the charger for an offline StartTransaction (an event
    of its local answer)."""
    for event in entry.events:
        if isinstance(event, TransactionStarted) and _is_int(event.transaction_id):
            return int(event.transaction_id)
    return None


def _is_int(text: str) -> bool:
    return text.removeprefix("-").isdigit()
