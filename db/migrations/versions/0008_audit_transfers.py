"""Audits with transfer sources: the audit's source models, and the transfer job each run launched.

Revision ID: 0008
Revises: 0007
Create Date: 2027-03-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audits") as batch:
        batch.add_column(sa.Column("transfer_source_ids", sa.JSON(none_as_null=True), nullable=True))
    op.create_table(
        "audit_run_transfers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("transfer_job_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["audit_runs.id"], name="fk_audit_run_transfers_run_id_audit_runs", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["transfer_job_id"],
            ["transfer_jobs.id"],
            name="fk_audit_run_transfers_transfer_job_id_transfer_jobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audit_run_transfers"),
        sa.UniqueConstraint("run_id", name="uq_audit_run_transfers_run_id"),
        sa.UniqueConstraint("transfer_job_id", name="uq_audit_run_transfers_transfer_job_id"),
    )


def downgrade() -> None:
    op.drop_table("audit_run_transfers")
    with op.batch_alter_table("audits") as batch:
        batch.drop_column("transfer_source_ids")
