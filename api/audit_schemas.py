"""Request and response bodies of /audits (AuditCreate / AuditUpdate / AuditRead / AuditRunRead)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from api.schemas import MAX_ID, NO_NUL, JobConfig, ModelId, Name
from services.audit_verdict import THRESHOLD_FLOOR, THRESHOLD_SPECS, ThresholdSpec
from services.transfer_specs import MAX_TRANSFER_MODELS

MAX_MODELS = 20
MAX_INTERVAL_S = 366 * 24 * 3600


def _threshold_field(spec: ThresholdSpec) -> tuple[Any, Any]:
    return float | None, Field(
        default=spec.default, ge=THRESHOLD_FLOOR, le=spec.ceiling, description=spec.describe()
    )


AuditThresholds = create_model(
    "AuditThresholds",
    __config__=ConfigDict(extra="forbid"),
    __doc__="How far each metric may move before a run is `regressed`; null: not checked. pp = percentage points. "
    "Whatever the thresholds, a run whose candidate evaluation failed a sanity check is `suspicious`.",
    **{name: _threshold_field(spec) for name, spec in THRESHOLD_SPECS.items()},
)


class _AuditFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_ids: list[ModelId] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_MODELS,
        description="evaluate exactly these models (or give model_name)",
    )
    model_name: Name | None = Field(
        default=None, description="evaluate the newest version of this model name"
    )
    cron: str | None = Field(
        default=None,
        max_length=120,
        pattern=NO_NUL,
        description="5-field cron, e.g. '0 3 * * 1' (03:00 on Mondays); needs timezone",
    )
    timezone: str | None = Field(
        default=None,
        max_length=64,
        pattern=NO_NUL,
        description="IANA time zone of the cron expression, e.g. UTC or Europe/Paris",
    )
    interval_s: int | None = Field(
        default=None,
        ge=1,
        le=MAX_INTERVAL_S,
        description="run every N seconds, counted from 1970-01-01 00:00 UTC",
    )
    baseline_job_id: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        description="pin a succeeded job as the baseline; null: the previous run that passed",
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=2000,
        pattern=NO_NUL,
        description="POSTed a JSON summary of each finished run",
    )
    transfer_source_ids: list[ModelId] | None = Field(
        default=None,
        max_length=MAX_TRANSFER_MODELS,
        description="models whose adversarial examples each run also tries on its candidates (a transfer "
        "job); the verdict compares the candidate's black-box worst case over them. Null or []: none",
    )


class AuditCreate(_AuditFields):
    """A new audit: one model selector, a dataset, an evaluation config, an optional schedule and webhook."""

    name: Name
    dataset_id: int = Field(ge=1, le=MAX_ID)
    config: JobConfig = Field(default_factory=JobConfig)
    thresholds: AuditThresholds = Field(default_factory=AuditThresholds)
    enabled: bool = True
    run_on_new_version: bool = Field(
        default=False, description="run when a new version of model_name is registered"
    )


class AuditUpdate(_AuditFields):
    """Fields to change. Setting one schedule kind (or model selector) clears the other; `config` is replaced
    as a whole, `thresholds` are merged key by key."""

    name: Name | None = None
    dataset_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    config: JobConfig | None = None
    thresholds: AuditThresholds | None = None
    enabled: bool | None = None
    run_on_new_version: bool | None = None


class AuditRunBrief(BaseModel):
    id: int
    status: str
    verdict: str | None
    trigger: str
    created_at: datetime
    finished_at: datetime | None


class AuditRead(BaseModel):
    id: int
    name: str
    enabled: bool
    cron: str | None
    timezone: str | None
    interval_s: int | None
    model_ids: list[int] | None
    model_name: str | None
    dataset_id: int
    config: dict[str, Any]
    baseline: str = Field(description="previous (the last run that passed) or job (baseline_job_id)")
    baseline_job_id: int | None
    thresholds: AuditThresholds
    webhook_url: str | None
    run_on_new_version: bool
    transfer_source_ids: list[int] | None = Field(default=None, description="the fixed transfer sources")
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None = Field(description="the next scheduled slot; null when none")
    last_run: AuditRunBrief | None = Field(description="the newest run, whatever its state")
    last_verdict: str | None = Field(description="verdict of the newest finished run (the badge)")


class AuditJobSummary(BaseModel):
    """A candidate or baseline job as a verdict saw it."""

    job_id: int
    run_id: int | None
    model_id: int
    model_name: str
    model_version: str
    clean_accuracy: float | None
    robust_auc: float | None = Field(description="FGSM robust AUC over the job's own ε range")
    worst_case_auc: float | None = Field(
        default=None, description="worst-case robust AUC (every attack); null for a version 1 report"
    )
    sanity_verdict: str | None = Field(
        default=None, description="passed or suspicious; null for a version 1 report (no sanity checks)"
    )
    failed_checks: list[str] = Field(
        default_factory=list, description="names of the sanity checks the evaluation failed"
    )
    transfer_job_id: int | None = Field(
        default=None, description="the run's transfer job with this model as the target (transfer sources)"
    )
    report_url: str


class MetricRowRead(BaseModel):
    """One line of the diff table; baseline, candidate, delta and threshold are in `unit`."""

    metric: str = Field(
        description="clean_accuracy, robust_auc, accuracy (FGSM), worst_case_accuracy (every attack), "
        "target_success_rate, cam_drift or transfer_worst_case_accuracy (black-box, over the transfer sources)"
    )
    eps: float | None
    eps_255: float | None
    baseline: float | None
    candidate: float | None
    delta: float | None = Field(description="candidate − baseline")
    threshold: float | None
    unit: str = Field(description="pp: values are percentages, delta and threshold percentage points; drift")
    direction: str = Field(description="drop or rise: the direction that counts as worse")
    regressed: bool


class AuditComparison(BaseModel):
    candidate: AuditJobSummary
    baseline: AuditJobSummary | None = Field(description="null: nothing earlier to compare with")
    regressed: bool
    rows: list[MetricRowRead]
    warnings: list[str]


class AuditRunJobRead(BaseModel):
    job_id: int
    model_id: int
    model_name: str
    model_version: str
    status: str
    progress: float
    error: str | None
    report_url: str


class WebhookDelivery(BaseModel):
    status: str | None = Field(description="pending, delivered, failed; null without a webhook")
    attempts: int
    error: str | None
    last_attempt_at: datetime | None


class AuditRunRead(BaseModel):
    id: int
    audit_id: int
    slot: str
    trigger: str = Field(description="schedule, manual or new_version")
    scheduled_for: datetime | None
    target_model_id: int | None
    status: str = Field(description="pending, running or finished")
    verdict: str | None = Field(
        description="passed, regressed, error, baseline or suspicious (a candidate evaluation failed a "
        "sanity check; the reason names the checks) once finished"
    )
    reason: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    clean_accuracy: float | None = Field(description="of the candidate job when the run has exactly one")
    robust_auc: float | None = Field(description="of the candidate job when the run has exactly one")
    worst_case_auc: float | None = Field(
        default=None, description="worst-case robust AUC of the candidate job when the run has exactly one"
    )
    regressed_metrics: int
    baseline_job_ids: list[int]
    thresholds: dict[str, Any]
    jobs: list[AuditRunJobRead]
    comparisons: list[AuditComparison]
    errors: list[str]
    webhook: WebhookDelivery
