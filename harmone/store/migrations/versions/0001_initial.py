"""Initial schema: users, API tokens, sites, chargers, connectors, connection attempts.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Written against harmone/store/models.py: keep both in step (tests/api/test_store.py compares them).
Timestamps are plain `DateTime(timezone=True)` here; the UTC handling lives in the model's
TypeDecorator and does not change the column type.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.CheckConstraint("role IN ('admin', 'operator', 'viewer')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("last_used_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_api_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_id", name=op.f("uq_api_tokens_token_id")),
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"])

    op.create_table(
        "sites",
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("gateway_host", sa.String(length=255), nullable=True),
        sa.Column("cpms_url", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.CheckConstraint("type IN ('cloud', 'gateway')", name=op.f("ck_sites_type")),
        sa.PrimaryKeyConstraint("uid", name=op.f("pk_sites")),
    )
    op.create_index(op.f("ix_sites_created_at"), "sites", ["created_at"])

    op.create_table(
        "chargers",
        sa.Column("site_uid", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("cpms_url", sa.Text(), nullable=True),
        sa.Column("ocpp_version", sa.String(length=16), nullable=True),
        sa.Column("vendor", sa.Text(), nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("serial_number", sa.Text(), nullable=True),
        sa.Column("firmware_version", sa.Text(), nullable=True),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("upstream_connected", sa.Boolean(), nullable=False),
        sa.Column("last_seen", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["site_uid"],
            ["sites.uid"],
            name=op.f("fk_chargers_site_uid_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("site_uid", "id", name=op.f("pk_chargers")),
    )
    op.create_table(
        "connectors",
        sa.Column("site_uid", sa.String(length=64), nullable=False),
        sa.Column("charger_id", sa.String(length=255), nullable=False),
        sa.Column("connector_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("updated_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["site_uid", "charger_id"],
            ["chargers.site_uid", "chargers.id"],
            name=op.f("fk_connectors_site_uid_charger_id_chargers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "site_uid", "charger_id", "connector_id", name=op.f("pk_connectors")
        ),
    )

    # No foreign key on site_uid: attempts on unknown or deleted sites are kept on purpose.
    op.create_table(
        "connection_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", _TS, nullable=False),
        sa.Column("site_uid", sa.Text(), nullable=False),
        sa.Column("charge_point_id", sa.Text(), nullable=False),
        sa.Column("remote_addr", sa.Text(), nullable=True),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("subprotocol", sa.String(length=64), nullable=True),
        sa.Column("offered_subprotocols", sa.Text(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connection_attempts")),
    )
    op.create_index("ix_connection_attempts_site_uid_at", "connection_attempts", ["site_uid", "at"])


def downgrade() -> None:
    op.drop_index("ix_connection_attempts_site_uid_at", table_name="connection_attempts")
    op.drop_table("connection_attempts")
    op.drop_table("connectors")
    op.drop_table("chargers")
    op.drop_index(op.f("ix_sites_created_at"), table_name="sites")
    op.drop_table("sites")
    op.drop_index(op.f("ix_api_tokens_user_id"), table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("users")
