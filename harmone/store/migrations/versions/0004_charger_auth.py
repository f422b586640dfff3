"""Charger authentication: a site flag and a password hash per charger.

Revision ID: 0004
Revises: 0003

Written against harmone/store/models.py (SiteRow.charger_auth, ChargerRow.password_hash):
keep both in step (tests/api/test_store.py compares them).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no batch "recreate" on SQLite, whose DROP of the old table would
    # cascade to chargers and connectors); existing sites keep working without authentication.
    op.add_column(
        "sites",
        sa.Column("charger_auth", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("chargers", sa.Column("password_hash", sa.String(length=255), nullable=True))


def downgrade() -> None:
    # SQLite >= 3.35 drops columns in place.
    op.drop_column("chargers", "password_hash")
    op.drop_column("sites", "charger_auth")
