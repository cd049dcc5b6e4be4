"""Transfer jobs: source × target models on one dataset, and the matrix of their results.

Revision ID: 0007
Revises: 0006
Create Date: 2027-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    op.create_table(
        "transfer_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("progress", sa.Float(), nullable=False, server_default=sa.text("0")),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("lost_reason", sa.Text(), nullable=True),
        sa.Column("worker_host", sa.String(200), nullable=True),
        sa.Column("queue", sa.String(200), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(_in("status", STATUSES), name="ck_transfer_jobs_status"),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name="ck_transfer_jobs_progress"),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name="fk_transfer_jobs_dataset_id_datasets", ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_transfer_jobs"),
    )
    op.create_index("ix_transfer_jobs_dataset_id", "transfer_jobs", ["dataset_id"])
    op.create_index("ix_transfer_jobs_status", "transfer_jobs", ["status"])
    op.create_table(
        "transfer_job_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transfer_job_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.UniqueConstraint(
            "transfer_job_id", "model_id", "role", name="uq_transfer_job_models_transfer_job_id_model_id_role"
        ),
        sa.CheckConstraint(_in("role", ("source", "target")), name="ck_transfer_job_models_role"),
        sa.ForeignKeyConstraint(
            ["transfer_job_id"],
            ["transfer_jobs.id"],
            name="fk_transfer_job_models_transfer_job_id_transfer_jobs",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_transfer_job_models_model_id_models", ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_transfer_job_models"),
    )
    op.create_index("ix_transfer_job_models_model_id", "transfer_job_models", ["model_id"])
    op.create_table(
        "transfer_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transfer_job_id", sa.Integer(), nullable=False),
        sa.Column("source_model_id", sa.Integer(), nullable=True),
        sa.Column("target_model_id", sa.Integer(), nullable=False),
        sa.Column("attack", sa.String(16), nullable=False),
        sa.Column("eps", sa.Float(), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=False),
        sa.Column("success_rate", sa.Float(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.CheckConstraint(_in("attack", ("fgsm", "pgd", "all")), name="ck_transfer_points_attack"),
        sa.ForeignKeyConstraint(
            ["transfer_job_id"],
            ["transfer_jobs.id"],
            name="fk_transfer_points_transfer_job_id_transfer_jobs",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_model_id"],
            ["models.id"],
            name="fk_transfer_points_source_model_id_models",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["target_model_id"],
            ["models.id"],
            name="fk_transfer_points_target_model_id_models",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_transfer_points"),
    )
    op.create_index("ix_transfer_points_transfer_job_id", "transfer_points", ["transfer_job_id"])
    op.create_index("ix_transfer_points_target_model_id", "transfer_points", ["target_model_id"])


def downgrade() -> None:
    op.drop_table("transfer_points")
    op.drop_table("transfer_job_models")
    op.drop_table("transfer_jobs")
