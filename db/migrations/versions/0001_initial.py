"""Initial schema: models, datasets, jobs, sweep points, CAM and architecture audits, artifacts, API tokens.

Revision ID: 0001
Revises:
Create Date: 2025-11-26
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SHA = 64
KEY = 255
NAME = 200


def _timestamp(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(SHA), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("arch", sa.String(NAME), nullable=True),
        sa.Column("num_classes", sa.Integer(), nullable=False),
        sa.Column("class_names", sa.JSON(), nullable=True),
        sa.Column("input_shape", sa.JSON(), nullable=False),
        sa.Column("mean", sa.JSON(), nullable=True),
        sa.Column("std", sa.JSON(), nullable=True),
        sa.Column("storage_key", sa.String(KEY), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", "version", name="uq_models_name_version"),
    )
    op.create_index("ix_models_sha256", "models", ["sha256"])

    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("sha256", sa.String(SHA), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("num_samples", sa.Integer(), nullable=False),
        sa.Column("input_shape", sa.JSON(), nullable=False),
        sa.Column("num_classes", sa.Integer(), nullable=False),
        sa.Column("class_names", sa.JSON(), nullable=True),
        sa.Column("storage_key", sa.String(KEY), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.String(1000), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.UniqueConstraint("name", name="uq_datasets_name"),
    )
    op.create_index("ix_datasets_sha256", "datasets", ["sha256"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), server_default="queued", nullable=False),
        sa.Column("progress", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("worker_host", sa.String(NAME), nullable=True),
        sa.Column("queue", sa.String(NAME), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        _timestamp("created_at"),
        _timestamp("started_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        _timestamp("heartbeat_at", nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("result_key", sa.String(KEY), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="ck_jobs_status"
        ),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name="ck_jobs_progress"),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_jobs_model_id_models", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name="fk_jobs_dataset_id_datasets", ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_model_id", "jobs", ["model_id"])
    op.create_index("ix_jobs_dataset_id", "jobs", ["dataset_id"])

    op.create_table(
        "sweep_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("attack", sa.String(16), nullable=False),
        sa.Column("policy", sa.String(64), nullable=True),
        sa.Column("eps", sa.Float(), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=False),
        sa.Column("attack_success_rate", sa.Float(), nullable=True),
        sa.Column("target_success_rate", sa.Float(), nullable=True),
        sa.Column("mean_confidence", sa.Float(), nullable=True),
        sa.Column("mean_target_probability", sa.Float(), nullable=True),
        sa.CheckConstraint("attack IN ('fgsm', 'targeted_fgsm')", name="ck_sweep_points_attack"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_sweep_points_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sweep_points"),
        sa.UniqueConstraint("job_id", "attack", "eps", name="uq_sweep_points_job_id_attack_eps"),
    )

    op.create_table(
        "cam_audits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("layer", sa.String(NAME), nullable=False),
        sa.Column("eps", sa.Float(), nullable=False),
        sa.Column("num_samples", sa.Integer(), nullable=False),
        sa.Column("mean_similarity", sa.Float(), nullable=True),
        sa.Column("mean_top20_iou", sa.Float(), nullable=True),
        sa.Column("mean_confidence_drop", sa.Float(), nullable=True),
        sa.Column("drift", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_cam_audits_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_cam_audits"),
        sa.UniqueConstraint("job_id", name="uq_cam_audits_job_id"),
    )

    op.create_table(
        "architecture_audits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_sha256", sa.String(SHA), nullable=False),
        sa.Column("input_shape", sa.String(64), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("params", sa.BigInteger(), nullable=True),
        sa.Column("macs", sa.BigInteger(), nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_architecture_audits"),
        sa.UniqueConstraint(
            "model_sha256", "input_shape", name="uq_architecture_audits_model_sha256_input_shape"
        ),
    )

    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("storage_key", sa.String(KEY), nullable=False),
        sa.Column("sha256", sa.String(SHA), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_artifacts_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_artifacts"),
        sa.UniqueConstraint("job_id", "name", name="uq_artifacts_job_id_name"),
    )
    op.create_index("ix_artifacts_storage_key", "artifacts", ["storage_key"])

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("token_hash", sa.String(SHA), nullable=False),
        _timestamp("created_at"),
        _timestamp("last_used_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )


def downgrade() -> None:
    for table in (
        "api_tokens",
        "artifacts",
        "architecture_audits",
        "cam_audits",
        "sweep_points",
        "jobs",
        "datasets",
        "models",
    ):
        op.drop_table(table)
