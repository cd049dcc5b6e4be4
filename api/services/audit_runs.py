"""Audit runs from the API: run now, the on-new-version trigger, and the run documents the dashboard reads."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from api.errors import ServiceUnavailable
from api.services import page
from db import repositories as repo
from db.models import Audit, AuditRun, Job, ModelRecord
from db.repositories._common import MAX_LIMIT
from services.audit_schedule import manual_slot_key, version_slot_key
from services.audit_states import MANUAL, NEW_VERSION, PENDING

log = logging.getLogger(__name__)

Dispatch = Callable[[int], None]  # enqueue the launch of audit run `id` (Broker.launch_audit_run)


def _report_url(job_id: int) -> str:
    return f"/api/v1/jobs/{job_id}/report"


def brief(run: AuditRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "verdict": run.verdict,
        "trigger": run.trigger,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
    }


def _summary(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if entry is None else {**entry, "report_url": _report_url(entry["job_id"])}


def _comparison(entry: dict[str, Any]) -> dict[str, Any]:
    rows = [{**row, "eps_255": None if row["eps"] is None else row["eps"] * 255} for row in entry["rows"]]
    return {
        "candidate": _summary(entry["candidate"]),
        "baseline": _summary(entry.get("baseline")),
        "regressed": entry["regressed"],
        "rows": rows,
        "warnings": entry.get("warnings", []),
    }


def _job(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "model_id": job.model_id,
        "model_name": job.model.name,
        "model_version": job.model.version,
        "status": job.status,
        "progress": job.progress,
        "error": job.error,
        "report_url": _report_url(job.id),
    }


def run_read(run: AuditRun, jobs: list[Job]) -> dict[str, Any]:
    """AuditRunRead: state, verdict and reason, the jobs, the diff tables against the baseline, the webhook."""
    result = run.result or {}
    comparisons = [_comparison(entry) for entry in result.get("comparisons", [])]
    single = comparisons[0]["candidate"] if len(comparisons) == 1 else None
    return {
        **{
            name: getattr(run, name)
            for name in (
                "id",
                "audit_id",
                "slot",
                "trigger",
                "scheduled_for",
                "target_model_id",
                "status",
                "verdict",
                "reason",
                "created_at",
                "started_at",
                "finished_at",
                "thresholds",
            )
        },
        "clean_accuracy": single["clean_accuracy"] if single else None,
        "robust_auc": single["robust_auc"] if single else None,
        "worst_case_auc": single.get("worst_case_auc") if single else None,
        "regressed_metrics": sum(row["regressed"] for entry in comparisons for row in entry["rows"]),
        "baseline_job_ids": sorted(
            {entry["baseline"]["job_id"] for entry in comparisons if entry["baseline"]}
        ),
        "jobs": [_job(job) for job in jobs],
        "comparisons": comparisons,
        "errors": result.get("errors", []),
        "webhook": {
            "status": run.webhook_status,
            "attempts": run.webhook_attempts,
            "error": run.webhook_error,
            "last_attempt_at": run.webhook_at,
        },
    }


def _read_many(session: Session, runs: list[AuditRun]) -> list[dict[str, Any]]:
    jobs: dict[int, list[Job]] = {run.id: [] for run in runs}
    for run_id, job in repo.audits.list_run_jobs(session=session, run_ids=list(jobs)):
        jobs[run_id].append(job)
    return [run_read(run, jobs[run.id]) for run in runs]


def list_runs(
    *, session: Session, audit: Audit, status: str | None, limit: int, offset: int
) -> dict[str, Any]:
    """A page of the audit's runs, newest first."""
    rows = list(
        repo.audits.list_runs(session=session, audit_id=audit.id, status=status, limit=limit, offset=offset)
    )
    total = repo.audits.count_runs(session=session, audit_id=audit.id, status=status)
    return page(_read_many(session, rows), total, limit, offset)


def read_run(*, session: Session, run: AuditRun) -> dict[str, Any]:
    return _read_many(session, [run])[0]


def audit_run(*, session: Session, audit: Audit, run_id: int) -> AuditRun | None:
    """Run `run_id` of `audit` (None when there is none, or it belongs to another audit)."""
    run = repo.audits.get_run(session=session, run_id=run_id)
    return run if run is not None and run.audit_id == audit.id else None


def run_count(*, session: Session, audit: Audit) -> int:
    return repo.audits.count_runs(session=session, audit_id=audit.id)


def run_now(*, session: Session, audit: Audit, dispatch: Dispatch) -> dict[str, Any]:
    """Record a pending manual run, COMMIT, then enqueue its launch; 503 (and no run) if the broker refuses."""
    run = repo.audits.create_run(
        session=session, audit=audit, slot=manual_slot_key(uuid.uuid4().hex), trigger=MANUAL
    )
    session.commit()
    try:
        dispatch(run.id)
    except Exception as error:  # broker down: undo the run unless a tick launched it meanwhile
        if repo.audits.delete_run(session=session, run_id=run.id, status=PENDING):
            session.commit()
            raise ServiceUnavailable(
                f"the run could not be queued (broker unavailable: {type(error).__name__}: "
                f"{error}); nothing was recorded, retry once the broker is reachable"
            ) from None
        log.warning("audit run %s: launch not sent (%s), but a tick launched it already", run.id, error)
    session.refresh(run)
    return read_run(session=session, run=run)


def record_new_version(*, session: Session, model: ModelRecord) -> list[AuditRun]:
    """Pending runs for the enabled audits that follow `model.name` and run on new versions.

    Written in the caller's transaction; the next tick launches them (the slot key version:<model id> makes a
    repeated call a no-op).
    """
    runs = []
    for audit in repo.audits.list(
        session=session, enabled=True, model_name=model.name, run_on_new_version=True, limit=MAX_LIMIT
    ):
        run = repo.audits.create_run(
            session=session,
            audit=audit,
            slot=version_slot_key(model.id),
            trigger=NEW_VERSION,
            target_model_id=model.id,
        )
        if run is not None:
            runs.append(run)
    return runs
