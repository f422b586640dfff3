"""Load management: one validated JSON configuration per site.

Revision ID: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "load_management",
        sa.Column("site_uid", sa.String(length=64), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_uid"],
            ["sites.uid"],
            ondelete="CASCADE",
            name=op.f("fk_load_management_site_uid_sites"),
        ),
        sa.PrimaryKeyConstraint("site_uid", name=op.f("pk_load_management")),
    )


def downgrade() -> None:
    op.drop_table("load_management")
