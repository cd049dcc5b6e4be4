"""Audits with transfer sources: the audit's source models (a table: a new column of `audits` would break
the ORM on older revisions), and the transfer job each run launched.

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
    op.create_table(
        "audit_transfer_sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["audit_id"], ["audits.id"], name="fk_audit_transfer_sources_audit_id_audits", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audit_transfer_sources"),
        sa.UniqueConstraint("audit_id", "model_id", name="uq_audit_transfer_sources_audit_id_model_id"),
    )
    op.create_index("ix_audit_transfer_sources_audit_id", "audit_transfer_sources", ["audit_id"])
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
    op.drop_index("ix_audit_transfer_sources_audit_id", table_name="audit_transfer_sources")
    op.drop_table("audit_transfer_sources")
