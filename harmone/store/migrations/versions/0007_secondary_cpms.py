"""A secondary CPMS per site (and per charger) and the site's rule for it.

Revision ID: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (see 0004: no batch recreate on SQLite); existing sites get no
    # secondary and the read-only rule.
    op.add_column("sites", sa.Column("secondary_cpms_url", sa.Text(), nullable=True))
    op.add_column(
        "sites",
        sa.Column("secondary_rule", sa.Text(), nullable=False, server_default="read-only"),
    )
    op.add_column("chargers", sa.Column("secondary_cpms_url", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("chargers", "secondary_cpms_url")
    op.drop_column("sites", "secondary_rule")
    op.drop_column("sites", "secondary_cpms_url")
