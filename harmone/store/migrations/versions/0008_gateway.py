"""Gateway sites (issue 12): paired boxes and pairing codes in the cloud; the box's identity,
cached configuration and outbox on the box.

Revision ID: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateways",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("site_uid", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_contact", sa.DateTime(timezone=True), nullable=True),
        sa.Column("software_version", sa.String(length=64), nullable=True),
        sa.Column("fingerprint", sa.String(length=128), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("clock_offset", sa.Float(), nullable=True),
        sa.Column("backlog", sa.Integer(), server_default="0", nullable=False),
        sa.Column("config_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("config_digest", sa.String(length=64), nullable=True),
        sa.Column("config_applied", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["site_uid"], ["sites.uid"], name=op.f("fk_gateways_site_uid_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateways")),
    )
    op.create_index(op.f("ix_gateways_site_uid"), "gateways", ["site_uid"], unique=False)
    op.create_table(
        "gateway_pairing_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("site_uid", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["site_uid"],
            ["sites.uid"],
            name=op.f("fk_gateway_pairing_codes_site_uid_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_gateway_pairing_codes")),
    )
    op.create_index(
        op.f("ix_gateway_pairing_codes_site_uid"),
        "gateway_pairing_codes",
        ["site_uid"],
        unique=False,
    )
    op.create_table(
        "box_identity",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cloud_url", sa.Text(), nullable=False),
        sa.Column("gateway_id", sa.String(length=32), nullable=False),
        sa.Column("credential", sa.Text(), nullable=False),
        sa.Column("site_uid", sa.String(length=64), nullable=False),
        sa.Column("config_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("config", sa.Text(), nullable=True),
        sa.Column("acked_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("attempt_cursor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("revoked", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("paired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_box_identity")),
    )
    op.create_table(
        "box_outbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_box_outbox")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_box_outbox_key"), "box_outbox", ["key"], unique=False)
    op.create_table(
        "box_sent",
        sa.Column("site_uid", sa.String(length=64), nullable=False),
        sa.Column("charger_id", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("site_uid", "charger_id", name=op.f("pk_box_sent")),
    )


def downgrade() -> None:
    op.drop_table("box_sent")
    op.drop_index(op.f("ix_box_outbox_key"), table_name="box_outbox")
    op.drop_table("box_outbox")
    op.drop_table("box_identity")
    op.drop_index(op.f("ix_gateway_pairing_codes_site_uid"), table_name="gateway_pairing_codes")
    op.drop_table("gateway_pairing_codes")
    op.drop_index(op.f("ix_gateways_site_uid"), table_name="gateways")
    op.drop_table("gateways")
