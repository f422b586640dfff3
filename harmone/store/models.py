"""The database schema as SQLAlchemy 2 typed declarative models.

These rows stay inside the store: the repositories map them to frozen records by field name
(`harmone.store.rows`) before handing anything out. Migrations in `migrations/versions` are
written by hand from this file; `tests/api/test_store.py` checks that they agree.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from harmone.clock import utcnow

__all__ = [
    "ApiTokenRow",
    "AttemptRow",
    "Base",
    "BoxIdentityRow",
    "BoxOutboxRow",
    "BoxSentRow",
    "ChargerRow",
    "ConnectorRow",
    "ConsoleSessionRow",
    "GatewayRow",
    "PairingCodeRow",
    "SiteRow",
    "UTCDateTime",
    "UserRow",
    "UserSiteRow",
]

log = logging.getLogger(__name__)

#: Deterministic constraint names, so that later migrations can refer to them on both backends.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC that always comes back timezone-aware (UTC).

    PostgreSQL has `timestamptz`, SQLite has only text: without this, SQLite would hand back
    naive datetimes and comparisons with aware ones would raise. Naive input is refused rather
    than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: HARMON-E stores aware UTC datetimes")
        value = value.astimezone(UTC)
        # SQLite stores text: a fixed UTC format without offset keeps ORDER BY chronological.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class UserRow(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('admin', 'operator', 'viewer')", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    #: argon2id PHC string (never the password itself).
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: True: the user sees only the sites listed in user_sites (possibly none). A separate
    #: flag, so that deleting a user's last allowed site never widens what they see.
    sites_restricted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: The public part of the token (`hm_<token_id>_<secret>`), used to find the row.
    token_id: Mapped[str] = mapped_column(String(32), unique=True)
    #: argon2id PHC string of the secret part.
    secret_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]


class UserSiteRow(Base):
    """A site a restricted user may see (see UserRow.sites_restricted)."""

    __tablename__ = "user_sites"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    site_uid: Mapped[str] = mapped_column(
        String(64), ForeignKey("sites.uid", ondelete="CASCADE"), primary_key=True, index=True
    )


class ConsoleSessionRow(Base):
    """A web console session. Only the SHA-256 of the session id is stored, so a copy of the
    database does not let anyone take over a session."""

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class SiteRow(Base):
    __tablename__ = "sites"
    __table_args__ = (CheckConstraint("type IN ('cloud', 'gateway')", name="type"),)

    uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16))
    gateway_host: Mapped[str | None] = mapped_column(String(255))
    cpms_url: Mapped[str | None] = mapped_column(Text)
    offline_mode: Mapped[str] = mapped_column(
        String(8), nullable=False, default="hold", server_default="hold"
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    #: Chargers must send HTTP Basic credentials that HARMON-E checks (migration 0004).
    charger_auth: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: A second backend per charger and what it may do (migration 0007).
    secondary_cpms_url: Mapped[str | None] = mapped_column(Text)
    secondary_rule: Mapped[str] = mapped_column(
        Text, nullable=False, default="read-only", server_default="read-only"
    )


class ChargerRow(Base):
    __tablename__ = "chargers"

    site_uid: Mapped[str] = mapped_column(
        String(64), ForeignKey("sites.uid", ondelete="CASCADE"), primary_key=True
    )
    #: The charger's OCPP identity (chargePointId), unique within its site.
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    cpms_url: Mapped[str | None] = mapped_column(Text)
    secondary_cpms_url: Mapped[str | None] = mapped_column(Text)
    # What the charger reports is stored as Text: a charger that breaks the OCPP length limits
    # must not make a whole state batch fail.
    ocpp_version: Mapped[str | None] = mapped_column(String(16))
    vendor: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    serial_number: Mapped[str | None] = mapped_column(Text)
    firmware_version: Mapped[str | None] = mapped_column(Text)
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    upstream_connected: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: argon2id PHC string of the charger's HTTP Basic password (never the password itself).
    password_hash: Mapped[str | None] = mapped_column(String(255))


class ConnectorRow(Base):
    __tablename__ = "connectors"
    __table_args__ = (
        ForeignKeyConstraint(
            ["site_uid", "charger_id"],
            ["chargers.site_uid", "chargers.id"],
            ondelete="CASCADE",
        ),
    )

    site_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    charger_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    connector_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime | None]


class AttemptRow(Base):
    """One connection attempt. `site_uid` is deliberately not a foreign key: attempts on
    unknown or deleted sites are what support people need to see."""

    __tablename__ = "connection_attempts"
    __table_args__ = (Index("ix_connection_attempts_site_uid_at", "site_uid", "at"),)

    # BIGINT on PostgreSQL (a flood of attempts must not exhaust the ids); SQLite needs plain
    # INTEGER for an autoincrementing rowid alias.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime]
    site_uid: Mapped[str] = mapped_column(Text)
    charge_point_id: Mapped[str] = mapped_column(Text)
    remote_addr: Mapped[str | None] = mapped_column(Text)
    accepted: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    subprotocol: Mapped[str | None] = mapped_column(String(64))
    #: Comma-joined: WebSocket subprotocol names are tokens and cannot contain commas.
    offered_subprotocols: Mapped[str] = mapped_column(Text, default="")
    http_status: Mapped[int | None] = mapped_column(Integer)


class LoadConfigRow(Base):
    """A site's load-management configuration, as validated JSON (harmone.loadmgmt.config)."""

    __tablename__ = "load_management"

    site_uid: Mapped[str] = mapped_column(
        String(64), ForeignKey("sites.uid", ondelete="CASCADE"), primary_key=True
    )
    config: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class LoadStateRow(Base):
    """What load management must keep across a restart, per site (harmone.store.loadstate)."""

    __tablename__ = "load_state"

    site_uid: Mapped[str] = mapped_column(
        String(64), ForeignKey("sites.uid", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class JournalRow(Base):
    """A charger message answered locally while its CPMS link was down, to replay in order."""

    __tablename__ = "journal"
    __table_args__ = (Index("ix_journal_charger", "site_uid", "charger_id", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    site_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    charger_id: Mapped[str] = mapped_column(String(255), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    frame: Mapped[str] = mapped_column(Text, nullable=False)
    #: The transactionId HARMON-E gave the charger for a StartTransaction it answered (1.6).
    local_tx_id: Mapped[int | None] = mapped_column(BigInteger(), nullable=True)
    #: StatusNotifications of one connector share a key: only the latest is kept.
    status_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class TxMapRow(Base):
    """1.6: the transaction id HARMON-E gave a charger offline -> the one the CPMS assigned."""

    __tablename__ = "tx_map"

    site_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    charger_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    local_id: Mapped[int] = mapped_column(BigInteger(), primary_key=True, autoincrement=False)
    cpms_id: Mapped[int] = mapped_column(BigInteger(), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class GatewayRow(Base):
    """Cloud side: a paired gateway box of a site (issue 12). Only the SHA-256 of its
    credential's secret is stored; `revoked_at` set means the box is refused."""

    __tablename__ = "gateways"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_uid: Mapped[str] = mapped_column(
        String(64), ForeignKey("sites.uid", ondelete="CASCADE"), index=True
    )
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    last_contact: Mapped[datetime | None]
    software_version: Mapped[str | None] = mapped_column(String(64))
    fingerprint: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime | None]
    clock_offset: Mapped[float | None] = mapped_column(Float)
    backlog: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The configuration version sent last and the one the box says it applied.
    config_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    config_digest: Mapped[str | None] = mapped_column(String(64))
    config_applied: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The highest outbox sequence number applied: resent events at or below it are skipped.
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class PairingCodeRow(Base):
    """Cloud side: a one-time, expiring code that pairs a box with a site (SHA-256 only)."""

    __tablename__ = "gateway_pairing_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_uid: Mapped[str] = mapped_column(
        String(64), ForeignKey("sites.uid", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class BoxIdentityRow(Base):
    """Box side: who this box is in its cloud, and the configuration it runs on (one row)."""

    __tablename__ = "box_identity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    cloud_url: Mapped[str] = mapped_column(Text)
    gateway_id: Mapped[str] = mapped_column(String(32))
    #: The box's own credential (it must present it); the cloud keeps only its hash.
    credential: Mapped[str] = mapped_column(Text)
    site_uid: Mapped[str] = mapped_column(String(64))
    config_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    config: Mapped[str | None] = mapped_column(Text)
    acked_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    attempt_cursor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    paired_at: Mapped[datetime] = mapped_column(default=utcnow)


class BoxOutboxRow(Base):
    """Box side: an event for the cloud, kept until the cloud acknowledges its sequence."""

    __tablename__ = "box_outbox"
    # AUTOINCREMENT: SQLite must never reuse a sequence number once the outbox was emptied
    # (the cloud skips numbers it has seen).
    __table_args__ = {"sqlite_autoincrement": True}

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    #: Events of the same kind and key supersede each other (a charger's state).
    key: Mapped[str | None] = mapped_column(Text, index=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BoxSentRow(Base):
    """Box side: the digest of the last charger state put in the outbox, per charger."""

    __tablename__ = "box_sent"

    site_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    charger_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
