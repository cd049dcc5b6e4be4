"""Tables of the service. Portable across PostgreSQL and SQLite: integer ids, JSON, bounded strings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
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
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, UTCDateTime, utcnow
from services.audit_states import PENDING, RUN_STATUSES, TRIGGERS, VERDICTS, WEBHOOK_STATUSES
from services.job_states import QUEUED, STATUSES

SHA256_LEN = 64
KEY_LEN = 255  # storage keys: a sha256 today, room for object-store keys later
NAME_LEN = 200

# none_as_null: a Python None is SQL NULL, not the JSON literal 'null', so `IS NULL` filters work.
NullableJSON = JSON(none_as_null=True)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


class ModelRecord(Base):
    """A registered checkpoint: one (name, version) pair; the file lives in the artifact store."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    version: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(SHA256_LEN), index=True)
    format: Mapped[str] = mapped_column(String(32))
    arch: Mapped[str | None] = mapped_column(String(NAME_LEN))
    num_classes: Mapped[int] = mapped_column(Integer)
    class_names: Mapped[list[str] | None] = mapped_column(NullableJSON)
    input_shape: Mapped[list[int]] = mapped_column(JSON)
    mean: Mapped[list[float] | None] = mapped_column(NullableJSON)
    std: Mapped[list[float] | None] = mapped_column(NullableJSON)
    storage_key: Mapped[str] = mapped_column(String(KEY_LEN))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    jobs: Mapped[list[Job]] = relationship(back_populates="model", passive_deletes="all")


class DatasetRecord(Base):
    """A registered dataset; `storage_key` is None for built-ins such as `digits`."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    sha256: Mapped[str] = mapped_column(String(SHA256_LEN), index=True)
    format: Mapped[str] = mapped_column(String(32))
    num_samples: Mapped[int] = mapped_column(Integer)
    input_shape: Mapped[list[int]] = mapped_column(JSON)
    num_classes: Mapped[int] = mapped_column(Integer)
    class_names: Mapped[list[str] | None] = mapped_column(NullableJSON)
    storage_key: Mapped[str | None] = mapped_column(String(KEY_LEN))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    jobs: Mapped[list[Job]] = relationship(back_populates="dataset", passive_deletes="all")


class Job(Base):
    """One evaluation of a model on a dataset; `report` is the exact report.json document once succeeded."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("status", STATUSES), name="status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # RESTRICT: a model or dataset cannot disappear from under the jobs (and reports) that used it.
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), index=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True, default=QUEUED, server_default=QUEUED)
    progress: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Why the last attempt ended without an outcome (its worker died, was killed …); kept across retries.
    lost_reason: Mapped[str | None] = mapped_column(Text)
    worker_host: Mapped[str | None] = mapped_column(String(NAME_LEN))
    queue: Mapped[str | None] = mapped_column(String(NAME_LEN))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last claim or progress report
    report: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON)
    result_key: Mapped[str | None] = mapped_column(String(KEY_LEN))
    # A sharded job: how many shards it was cut into, and how many have finished (the last one merges).
    shards_total: Mapped[int | None] = mapped_column(Integer)
    shards_done: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))

    model: Mapped[ModelRecord] = relationship(back_populates="jobs")
    dataset: Mapped[DatasetRecord] = relationship(back_populates="jobs")
    sweep_points: Mapped[list[SweepPoint]] = relationship(
        back_populates="job",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by=lambda: [SweepPoint.attack, SweepPoint.eps],
    )
    cam_audit: Mapped[CamAuditRecord | None] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True
    )
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True, order_by="Artifact.name"
    )
    shards: Mapped[list[JobShard]] = relationship(
        back_populates="job",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="JobShard.shard_index",
    )


class JobShard(Base):
    """One range of a sharded job's samples: a task of its own that any worker takes; the last one merges.

    Its status follows the job transition table; `attempts` counts its claims (a lost shard runs again).
    """

    __tablename__ = "job_shards"
    __table_args__ = (
        UniqueConstraint("job_id", "shard_index"),
        CheckConstraint(_in("status", STATUSES), name="status"),
        CheckConstraint("sample_start >= 0 AND sample_stop > sample_start", name="sample_range"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    shard_index: Mapped[int] = mapped_column(Integer)
    sample_start: Mapped[int] = mapped_column(Integer)  # dataset index of its first sample
    sample_stop: Mapped[int] = mapped_column(Integer)  # one past its last
    status: Mapped[str] = mapped_column(String(16), index=True, default=QUEUED, server_default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    progress: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    worker_host: Mapped[str | None] = mapped_column(String(NAME_LEN))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    seconds: Mapped[float | None] = mapped_column(Float)  # the sweep of its samples, on its worker
    outcome_key: Mapped[str | None] = mapped_column(String(KEY_LEN))  # its outcomes (.npz) in the store
    error: Mapped[str | None] = mapped_column(Text)
    lost_reason: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="shards")


class SweepPoint(Base):
    """One ε of one attack for one job; the unique key makes a redelivered task unable to duplicate it."""

    __tablename__ = "sweep_points"
    __table_args__ = (
        UniqueConstraint("job_id", "attack", "eps"),
        CheckConstraint(_in("attack", ("fgsm", "targeted_fgsm")), name="attack"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attack: Mapped[str] = mapped_column(String(16))
    policy: Mapped[str | None] = mapped_column(String(64))
    eps: Mapped[float] = mapped_column(Float)
    accuracy: Mapped[float] = mapped_column(Float)
    attack_success_rate: Mapped[float | None] = mapped_column(Float)
    target_success_rate: Mapped[float | None] = mapped_column(Float)
    mean_confidence: Mapped[float | None] = mapped_column(Float)
    mean_target_probability: Mapped[float | None] = mapped_column(Float)

    job: Mapped[Job] = relationship(back_populates="sweep_points")


class CamAuditRecord(Base):
    """Summary of a job's CAM audit (the per-sample detail stays in the report document)."""

    __tablename__ = "cam_audits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    method: Mapped[str] = mapped_column(String(32))
    layer: Mapped[str] = mapped_column(String(NAME_LEN))
    eps: Mapped[float] = mapped_column(Float)
    num_samples: Mapped[int] = mapped_column(Integer)
    mean_similarity: Mapped[float | None] = mapped_column(Float)
    mean_top20_iou: Mapped[float | None] = mapped_column(Float)
    mean_confidence_drop: Mapped[float | None] = mapped_column(Float)
    drift: Mapped[float | None] = mapped_column(Float)

    job: Mapped[Job] = relationship(back_populates="cam_audit")


class ArchitectureAuditRecord(Base):
    """Architecture audit cached per model sha256 and input shape ("C,H,W")."""

    __tablename__ = "architecture_audits"
    __table_args__ = (UniqueConstraint("model_sha256", "input_shape"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_sha256: Mapped[str] = mapped_column(String(SHA256_LEN))
    input_shape: Mapped[str] = mapped_column(String(64))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[int | None] = mapped_column(BigInteger)
    macs: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Artifact(Base):
    """A file a job produced (PNG, npz, …), stored content-addressed in the artifact store."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    kind: Mapped[str] = mapped_column(String(32))
    storage_key: Mapped[str] = mapped_column(String(KEY_LEN), index=True)
    sha256: Mapped[str] = mapped_column(String(SHA256_LEN))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="artifacts")


class ApiToken(Base):
    """A bearer token, kept only as its sha256 hex digest."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    token_hash: Mapped[str] = mapped_column(String(SHA256_LEN), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Audit(Base):
    """A regression audit: which models to evaluate on which dataset, when, and what counts as a regression.

    The model selector is either `model_ids` (fixed ids) or `model_name` (always its newest version).
    `baseline_job_id` pins the baseline; None means "the previous run that passed".
    """

    __tablename__ = "audits"
    __table_args__ = (
        CheckConstraint("cron IS NULL OR interval_s IS NULL", name="one_schedule"),
        CheckConstraint("interval_s IS NULL OR interval_s > 0", name="interval"),
        CheckConstraint("(model_ids IS NULL) <> (model_name IS NULL)", name="one_selector"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    cron: Mapped[str | None] = mapped_column(String(120))
    timezone: Mapped[str | None] = mapped_column(String(64))
    interval_s: Mapped[int | None] = mapped_column(Integer)
    # Slots before this instant never run: a new, changed or re-enabled schedule starts from "now".
    schedule_from: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    model_ids: Mapped[list[int] | None] = mapped_column(NullableJSON)
    model_name: Mapped[str | None] = mapped_column(String(NAME_LEN))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # RESTRICT: the job an audit is judged against cannot disappear from under it.
    baseline_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="RESTRICT"))
    thresholds: Mapped[dict[str, Any]] = mapped_column(JSON)
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    run_on_new_version: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    runs: Mapped[list[AuditRun]] = relationship(
        back_populates="audit", cascade="all, delete-orphan", passive_deletes=True
    )
    # Models whose adversarial examples each run also tries on its candidates (a transfer job), in order.
    transfer_sources: Mapped[list[AuditTransferSource]] = relationship(
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="AuditTransferSource.position",
        lazy="selectin",
    )

    @property
    def transfer_source_ids(self) -> list[int] | None:
        """The transfer sources' model ids in their order; None: the audit measures no transfer robustness."""
        return [source.model_id for source in self.transfer_sources] or None

    @transfer_source_ids.setter
    def transfer_source_ids(self, model_ids: list[int] | None) -> None:
        # A source kept by an update keeps its row (a new one would be inserted before the old one is deleted,
        # against the unique (audit, model) constraint); only its position changes.
        kept = {source.model_id: source for source in self.transfer_sources}
        sources = []
        for index, model_id in enumerate(model_ids or []):
            source = kept.pop(model_id, None) or AuditTransferSource(model_id=model_id)
            source.position = index
            sources.append(source)
        self.transfer_sources = sources


class AuditTransferSource(Base):
    """One transfer source of an audit. No foreign key to the model: deleting a model stays possible, and the
    next run says that the source no longer exists (as for the audit's model_ids)."""

    __tablename__ = "audit_transfer_sources"
    __table_args__ = (UniqueConstraint("audit_id", "model_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)


class AuditRun(Base):
    """One run of an audit for one slot; (audit_id, slot) is unique, so a slot can never run twice."""

    __tablename__ = "audit_runs"
    __table_args__ = (
        UniqueConstraint("audit_id", "slot"),
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        CheckConstraint(f"verdict IS NULL OR {_in('verdict', VERDICTS)}", name="verdict"),
        CheckConstraint(_in("trigger", TRIGGERS), name="trigger"),
        CheckConstraint(
            f"webhook_status IS NULL OR {_in('webhook_status', WEBHOOK_STATUSES)}", name="webhook_status"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"))
    slot: Mapped[str] = mapped_column(String(64))  # at:<UTC instant>, manual:<token> or version:<model id>
    trigger: Mapped[str] = mapped_column(String(16))
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    target_model_id: Mapped[int | None] = mapped_column(Integer)  # the new version a version trigger names
    status: Mapped[str] = mapped_column(String(16), index=True, default=PENDING, server_default=PENDING)
    verdict: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    thresholds: Mapped[dict[str, Any]] = mapped_column(JSON)  # as they were when the run was recorded
    result: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON)  # comparisons: the diff tables
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    webhook_status: Mapped[str | None] = mapped_column(String(16))
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    webhook_error: Mapped[str | None] = mapped_column(Text)
    webhook_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the last delivery attempt
    # When every evaluate message of the run went to the broker; NULL on a running run: the launch may have
    # died between its commit and its sends, and the tick sends the queued jobs again.
    jobs_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    audit: Mapped[Audit] = relationship(back_populates="runs")


class AuditRunJob(Base):
    """Links an audit run to the evaluation jobs it created (a job belongs to at most one run)."""

    __tablename__ = "audit_run_jobs"
    __table_args__ = (UniqueConstraint("job_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))


class AuditRunTransfer(Base):
    """Links an audit run to the transfer job it launched, its candidates as the targets (one per run)."""

    __tablename__ = "audit_run_transfers"
    __table_args__ = (UniqueConstraint("run_id"), UniqueConstraint("transfer_job_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"))
    transfer_job_id: Mapped[int] = mapped_column(ForeignKey("transfer_jobs.id", ondelete="CASCADE"))


# The transfer-matrix tables live in their own module; imported here so Base.metadata holds every table.
from db.transfer_models import TransferJob as TransferJob  # noqa: E402
from db.transfer_models import TransferJobModel as TransferJobModel  # noqa: E402
from db.transfer_models import TransferPointRecord as TransferPointRecord  # noqa: E402
