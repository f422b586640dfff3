"""Web console: sessions, and users limited to some sites.

Revision ID: 0002
Revises: 0001

Written against harmone/store/models.py (ConsoleSessionRow, UserSiteRow,
UserRow.sites_restricted): keep both in step (tests/api/test_store.py compares them).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # A plain ADD COLUMN on both backends (with a default, NOT NULL is fine on SQLite): no
    # batch "recreate", whose DROP of the old users table would cascade to its tokens.
    op.add_column(
        "users",
        sa.Column("sites_restricted", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "user_sites",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("site_uid", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_sites_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["site_uid"],
            ["sites.uid"],
            name=op.f("fk_user_sites_site_uid_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "site_uid", name=op.f("pk_user_sites")),
    )
    op.create_index(op.f("ix_user_sites_site_uid"), "user_sites", ["site_uid"])
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("last_seen_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_console_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_console_sessions")),
    )
    op.create_index(op.f("ix_console_sessions_user_id"), "console_sessions", ["user_id"])
    op.create_index(op.f("ix_console_sessions_expires_at"), "console_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_console_sessions_expires_at"), table_name="console_sessions")
    op.drop_index(op.f("ix_console_sessions_user_id"), table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_index(op.f("ix_user_sites_site_uid"), table_name="user_sites")
    op.drop_table("user_sites")
    op.drop_column("users", "sites_restricted")  # SQLite >= 3.35 drops columns in place
