"""Tables of transfer jobs: source × target models on one dataset, and the matrix they produced."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, UTCDateTime, utcnow
from services.job_states import QUEUED, STATUSES

NAME_LEN = 200
ROLES = ("source", "target")
POINT_ATTACKS = ("fgsm", "pgd", "all")  # services.transfer_specs: the attacks, and the worst case over them


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


class TransferJob(Base):
    """One transfer matrix; its status follows the job transition table (services.job_states)."""

    __tablename__ = "transfer_jobs"
    __table_args__ = (
        CheckConstraint(_in("status", STATUSES), name="status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True, default=QUEUED, server_default=QUEUED)
    progress: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    lost_reason: Mapped[str | None] = mapped_column(Text)
    worker_host: Mapped[str | None] = mapped_column(String(NAME_LEN))
    queue: Mapped[str | None] = mapped_column(String(NAME_LEN))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    models: Mapped[list[TransferJobModel]] = relationship(
        back_populates="transfer_job",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="TransferJobModel.id",
    )
    points: Mapped[list[TransferPointRecord]] = relationship(
        back_populates="transfer_job",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="TransferPointRecord.id",
    )

    def model_ids(self, role: str) -> list[int]:
        """The job's models of `role` (source or target), in the order they were given."""
        return [link.model_id for link in self.models if link.role == role]


class TransferJobModel(Base):
    """A model in a transfer job, as a source or a target (RESTRICT: the model cannot be deleted under it)."""

    __tablename__ = "transfer_job_models"
    __table_args__ = (
        UniqueConstraint("transfer_job_id", "model_id", "role"),
        CheckConstraint(_in("role", ROLES), name="role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transfer_job_id: Mapped[int] = mapped_column(ForeignKey("transfer_jobs.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), index=True)
    role: Mapped[str] = mapped_column(String(16))

    transfer_job: Mapped[TransferJob] = relationship(back_populates="models")


class TransferPointRecord(Base):
    """One cell of the matrix at one ε. A NULL source is the target's worst case over the other sources."""

    __tablename__ = "transfer_points"
    __table_args__ = (CheckConstraint(_in("attack", POINT_ATTACKS), name="attack"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transfer_job_id: Mapped[int] = mapped_column(
        ForeignKey("transfer_jobs.id", ondelete="CASCADE"), index=True
    )
    source_model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"))
    target_model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), index=True)
    attack: Mapped[str] = mapped_column(String(16))
    eps: Mapped[float] = mapped_column(Float)
    accuracy: Mapped[float] = mapped_column(Float)
    success_rate: Mapped[float | None] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)

    transfer_job: Mapped[TransferJob] = relationship(back_populates="points")
