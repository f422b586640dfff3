"""Load management's running state (transactions, accepted limits, flags) per site.

Revision ID: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "load_state",
        sa.Column("site_uid", sa.String(length=64), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_uid"],
            ["sites.uid"],
            name=op.f("fk_load_state_site_uid_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("site_uid", name=op.f("pk_load_state")),
    )


def downgrade() -> None:
    op.drop_table("load_state")
