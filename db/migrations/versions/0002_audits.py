"""Regression audits: audits, their runs (unique per audit and slot), and the jobs each run created.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-27
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NAME = 200


def _timestamp(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "audits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("cron", sa.String(120), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("interval_s", sa.Integer(), nullable=True),
        _timestamp("schedule_from"),
        sa.Column("model_ids", sa.JSON(), nullable=True),
        sa.Column("model_name", sa.String(NAME), nullable=True),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("baseline_job_id", sa.Integer(), nullable=True),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("webhook_url", sa.String(2000), nullable=True),
        sa.Column("run_on_new_version", sa.Boolean(), server_default=sa.false(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint("cron IS NULL OR interval_s IS NULL", name="ck_audits_one_schedule"),
        sa.CheckConstraint("interval_s IS NULL OR interval_s > 0", name="ck_audits_interval"),
        sa.CheckConstraint("(model_ids IS NULL) <> (model_name IS NULL)", name="ck_audits_one_selector"),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name="fk_audits_dataset_id_datasets", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["baseline_job_id"], ["jobs.id"], name="fk_audits_baseline_job_id_jobs", ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audits"),
        sa.UniqueConstraint("name", name="uq_audits_name"),
    )
    op.create_index("ix_audits_dataset_id", "audits", ["dataset_id"])

    op.create_table(
        "audit_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.String(64), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        _timestamp("scheduled_for", nullable=True),
        sa.Column("target_model_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("verdict", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        _timestamp("created_at"),
        _timestamp("started_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        sa.Column("webhook_status", sa.String(16), nullable=True),
        sa.Column("webhook_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("webhook_error", sa.Text(), nullable=True),
        _timestamp("webhook_at", nullable=True),
        sa.CheckConstraint("status IN ('pending', 'running', 'finished')", name="ck_audit_runs_status"),
        sa.CheckConstraint(
            "verdict IS NULL OR verdict IN ('passed', 'regressed', 'error', 'baseline')",
            name="ck_audit_runs_verdict",
        ),
        sa.CheckConstraint("trigger IN ('schedule', 'manual', 'new_version')", name="ck_audit_runs_trigger"),
        sa.CheckConstraint(
            "webhook_status IS NULL OR webhook_status IN ('pending', 'delivered', 'failed')",
            name="ck_audit_runs_webhook_status",
        ),
        sa.ForeignKeyConstraint(
            ["audit_id"], ["audits.id"], name="fk_audit_runs_audit_id_audits", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audit_runs"),
        sa.UniqueConstraint("audit_id", "slot", name="uq_audit_runs_audit_id_slot"),
    )
    op.create_index("ix_audit_runs_status", "audit_runs", ["status"])

    op.create_table(
        "audit_run_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["audit_runs.id"], name="fk_audit_run_jobs_run_id_audit_runs", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_audit_run_jobs_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audit_run_jobs"),
        sa.UniqueConstraint("job_id", name="uq_audit_run_jobs_job_id"),
    )
    op.create_index("ix_audit_run_jobs_run_id", "audit_run_jobs", ["run_id"])


def downgrade() -> None:
    for table in ("audit_run_jobs", "audit_runs", "audits"):
        op.drop_table(table)
