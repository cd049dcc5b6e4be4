"""Audit runs remember when their evaluate messages were all handed to the broker (lost launches are resent).

Revision ID: 0003
Revises: 0002
Create Date: 2025-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_runs") as batch:
        batch.add_column(sa.Column("jobs_sent_at", sa.DateTime(timezone=True), nullable=True))
    # Runs launched before this revision: their messages went out (or their runs are long over).
    op.execute("UPDATE audit_runs SET jobs_sent_at = started_at WHERE status <> 'pending'")


def downgrade() -> None:
    with op.batch_alter_table("audit_runs") as batch:
        batch.drop_column("jobs_sent_at")
