"""Sharded jobs: a table of shards (sample ranges run as tasks of their own) and the job's shard counter.

Revision ID: 0006
Revises: 0005
Create Date: 2027-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("shards_total", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("shards_done", sa.Integer(), nullable=False, server_default=sa.text("0")))
    op.create_table(
        "job_shards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("shard_index", sa.Integer(), nullable=False),
        sa.Column("sample_start", sa.Integer(), nullable=False),
        sa.Column("sample_stop", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("progress", sa.Float(), nullable=False, server_default=sa.text("0")),
        sa.Column("worker_host", sa.String(200), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("outcome_key", sa.String(255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("lost_reason", sa.Text(), nullable=True),
        sa.UniqueConstraint("job_id", "shard_index", name="uq_job_shards_job_id_shard_index"),
        sa.CheckConstraint(
            f"status IN ({', '.join(repr(status) for status in STATUSES)})", name="ck_job_shards_status"
        ),
        sa.CheckConstraint(
            "sample_start >= 0 AND sample_stop > sample_start", name="ck_job_shards_sample_range"
        ),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name="ck_job_shards_progress"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_shards_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_job_shards"),
    )
    op.create_index("ix_job_shards_job_id", "job_shards", ["job_id"])
    op.create_index("ix_job_shards_status", "job_shards", ["status"])


def downgrade() -> None:
    op.drop_table("job_shards")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("shards_done")
        batch.drop_column("shards_total")
