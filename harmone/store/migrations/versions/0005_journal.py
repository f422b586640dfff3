"""Offline journal and 1.6 transaction id mappings.

Revision ID: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.add_column(
            sa.Column("offline_mode", sa.String(length=8), nullable=False, server_default="hold")
        )
    op.create_table(
        "journal",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("site_uid", sa.String(length=64), nullable=False),
        sa.Column("charger_id", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("frame", sa.Text(), nullable=False),
        sa.Column("local_tx_id", sa.BigInteger(), nullable=True),
        sa.Column("status_key", sa.String(length=64), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journal")),
    )
    op.create_index("ix_journal_charger", "journal", ["site_uid", "charger_id", "id"])
    op.create_table(
        "tx_map",
        sa.Column("site_uid", sa.String(length=64), nullable=False),
        sa.Column("charger_id", sa.String(length=255), nullable=False),
        sa.Column("local_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("cpms_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("site_uid", "charger_id", "local_id", name=op.f("pk_tx_map")),
    )


def downgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("offline_mode")
    op.drop_table("tx_map")
    op.drop_index("ix_journal_charger", table_name="journal")
    op.drop_table("journal")
