"""Read models of the audit pages: the audit list, one audit with its runs and timeline, one run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from api.services import audit_runs as run_service
from api.services import audits as audit_service
from db import repositories as repo
from db.models import Audit, AuditRun, DatasetRecord, Job, ModelRecord
from services.audit_states import ERROR, FINISHED, SUSPICIOUS

MAX_AUDITS = 1000
MAX_RUNS = 100  # the audit page shows the newest runs; GET /api/v1/audits/{id}/runs pages through all
MAX_MODEL_RECORDS = 1000
INTERVAL_UNITS = ((86400, "d"), (3600, "h"), (60, "min"))


def describe_interval(seconds: int) -> str:
    """3600 → "every 1 h", 5400 → "every 90 min", 45 → "every 45 s": the largest unit that divides it."""
    for size, unit in INTERVAL_UNITS:
        if seconds % size == 0:
            return f"every {seconds // size} {unit}"
    return f"every {seconds} s"


def describe_schedule(audit: dict[str, Any]) -> str:
    """The schedule of an AuditRead in words: cron with its time zone, an interval, or on demand."""
    if audit["cron"]:
        when = f"cron {audit['cron']} ({audit['timezone']})"
    elif audit["interval_s"]:
        when = describe_interval(audit["interval_s"])
    else:
        when = "on demand"
    return when + (", and on each new version" if audit["run_on_new_version"] else "")


def chart_time(moment: datetime | None) -> str | None:
    """A UTC instant as Plotly reads dates ("2024-05-01 03:00:00.000000": it ignores time zone suffixes)."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def newest_versions(*, session: Session) -> list[ModelRecord]:
    """The newest record of every model name, by name: what a model-name selector evaluates today."""
    newest: dict[str, ModelRecord] = {}
    for model in repo.models.list(session=session, limit=MAX_MODEL_RECORDS):  # newest first
        newest.setdefault(model.name, model)
    return sorted(newest.values(), key=lambda model: model.name.lower())


def _dataset_names(session: Session, ids: set[int]) -> dict[int, str]:
    names = {}
    for dataset_id in ids:
        dataset = repo.datasets.get(session=session, dataset_id=dataset_id)
        names[dataset_id] = dataset.name if dataset is not None else f"dataset {dataset_id}"
    return names


def audit_list(*, session: Session) -> list[dict[str, Any]]:
    """Every audit (newest first) as AuditRead, with its dataset's name and its schedule in words."""
    audits = audit_service.list_audits(
        session=session, enabled=None, model_name=None, limit=MAX_AUDITS, offset=0
    )["data"]
    names = _dataset_names(session, {audit["dataset_id"] for audit in audits})
    return [
        {**audit, "dataset_name": names[audit["dataset_id"]], "schedule": describe_schedule(audit)}
        for audit in audits
    ]


def error_point(run: dict[str, Any]) -> dict[str, Any]:
    """A run that ended in `error`: one chart point with no metrics, and the reason it gives."""
    return {
        "run_id": run["id"],
        "at": chart_time(run["created_at"]),
        "verdict": ERROR,
        "trigger": run["trigger"],
        "model": None,
        "version": None,
        "job_id": None,
        "clean_accuracy": None,
        "robust_auc": None,
        "worst_case_auc": None,
        "regressed": False,
        "suspicious": False,
        "reason": run["reason"],
    }


def timeline(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chart points, oldest first: one per judged candidate job with the run's verdict and regression flag, and
    one per run that ended in `error` (its reason, no metrics)."""
    points = []
    for run in reversed(runs):
        if run["status"] != FINISHED:
            continue
        if run["verdict"] == ERROR:
            points.append(error_point(run))
            continue
        for comparison in run["comparisons"]:
            candidate = comparison["candidate"]
            points.append(
                {
                    "run_id": run["id"],
                    "at": chart_time(run["created_at"]),
                    "verdict": run["verdict"],
                    "trigger": run["trigger"],
                    "model": candidate["model_name"],
                    "version": candidate["model_version"],
                    "job_id": candidate["job_id"],
                    "clean_accuracy": candidate["clean_accuracy"],
                    "robust_auc": candidate["robust_auc"],
                    "worst_case_auc": candidate.get("worst_case_auc"),
                    "regressed": comparison["regressed"],
                    "suspicious": candidate.get("sanity_verdict") == SUSPICIOUS,
                }
            )
    return points


@dataclass(frozen=True)
class AuditView:
    """What the audit page shows: the definition, the models it selects now, its runs and their timeline."""

    audit: dict[str, Any]
    dataset: DatasetRecord | None
    models: list[ModelRecord]
    baseline_job: Job | None
    runs: list[dict[str, Any]]
    runs_total: int
    latest_verdict: dict[str, Any] | None  # the newest finished run, whose diff tables the page shows

    @property
    def timeline(self) -> list[dict[str, Any]]:
        return timeline(self.runs)


def _selected_models(session: Session, audit: Audit) -> list[ModelRecord]:
    """The models the selector names now (missing ones are left out: the next run reports them)."""
    if audit.model_name is not None:
        model = repo.models.get_by_name(session=session, name=audit.model_name)
        return [model] if model is not None else []
    found = (repo.models.get(session=session, model_id=model_id) for model_id in audit.model_ids or [])
    return [model for model in found if model is not None]


def audit_view(*, session: Session, audit: Audit) -> AuditView:
    runs = run_service.list_runs(session=session, audit=audit, status=None, limit=MAX_RUNS, offset=0)
    latest = next((run for run in runs["data"] if run["status"] == FINISHED), None)
    baseline = None
    if audit.baseline_job_id is not None:
        baseline = repo.jobs.get(session=session, job_id=audit.baseline_job_id)
    return AuditView(
        audit=audit_service.audit_read(session, audit),
        dataset=repo.datasets.get(session=session, dataset_id=audit.dataset_id),
        models=_selected_models(session, audit),
        baseline_job=baseline,
        runs=runs["data"],
        runs_total=runs["count"],
        latest_verdict=latest,
    )


def audit_run(*, session: Session, audit_id: int, run_id: int) -> AuditRun | None:
    """The run `run_id` if it belongs to audit `audit_id`."""
    run = repo.audits.get_run(session=session, run_id=run_id)
    return run if run is not None and run.audit_id == audit_id else None
