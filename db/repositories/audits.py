"""Audits and their runs: CRUD, slot-unique run creation, and compare-and-set run status changes."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Update, func, select
from sqlalchemy import delete as sql_delete
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from db.base import utcnow
from db.models import Audit, AuditRun, AuditRunJob, Job
from db.repositories._common import DEFAULT_LIMIT, MAX_LIMIT, paginate, rows_matched, set_fields
from db.repositories._common import count as count_rows
from services.audit_states import (
    FINISHED,
    PENDING,
    REFERENCE_VERDICTS,
    RUNNING,
    WEBHOOK_PENDING,
    check_run_transition,
)

# The run's status moves only through transition_run (compare-and-set); slot and audit never change.
_RUN_MANAGED = ("id", "audit_id", "slot", "status", "created_at")


def get(*, session: Session, audit_id: int) -> Audit | None:
    return session.get(Audit, audit_id)


def get_by_name(*, session: Session, name: str) -> Audit | None:
    return session.scalar(select(Audit).where(Audit.name == name))


def _filtered(enabled: bool | None, model_name: str | None, run_on_new_version: bool | None) -> Select[Audit]:
    statement = select(Audit)
    if enabled is not None:
        statement = statement.where(Audit.enabled.is_(enabled))
    if model_name is not None:
        statement = statement.where(Audit.model_name == model_name)
    if run_on_new_version is not None:
        statement = statement.where(Audit.run_on_new_version.is_(run_on_new_version))
    return statement


def list(
    *,
    session: Session,
    enabled: bool | None = None,
    model_name: str | None = None,
    run_on_new_version: bool | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> Sequence[Audit]:
    return paginate(
        session, _filtered(enabled, model_name, run_on_new_version), Audit.id, limit=limit, offset=offset
    )


def count(
    *,
    session: Session,
    enabled: bool | None = None,
    model_name: str | None = None,
    run_on_new_version: bool | None = None,
) -> int:
    return count_rows(session, _filtered(enabled, model_name, run_on_new_version))


def create(
    *,
    session: Session,
    name: str,
    dataset_id: int,
    config: dict[str, Any],
    thresholds: dict[str, Any],
    model_ids: Sequence[int] | None = None,
    model_name: str | None = None,
    cron: str | None = None,
    timezone: str | None = None,
    interval_s: int | None = None,
    baseline_job_id: int | None = None,
    webhook_url: str | None = None,
    enabled: bool = True,
    run_on_new_version: bool = False,
    transfer_source_ids: Sequence[int] | None = None,
) -> Audit:
    """Add an audit (already validated by the caller); a duplicate name fails the flush."""
    now = utcnow()
    audit = Audit(
        name=name,
        dataset_id=dataset_id,
        config=config,
        thresholds=thresholds,
        model_ids=None if model_ids is None else builtins.list(model_ids),
        model_name=model_name,
        cron=cron,
        timezone=timezone,
        interval_s=interval_s,
        baseline_job_id=baseline_job_id,
        webhook_url=webhook_url,
        enabled=enabled,
        run_on_new_version=run_on_new_version,
        schedule_from=now,
        created_at=now,
        updated_at=now,
    )
    if transfer_source_ids:
        audit.transfer_source_ids = builtins.list(transfer_source_ids)
    session.add(audit)
    session.flush()
    return audit


def update(*, session: Session, audit: Audit, **fields: Any) -> Audit:
    """Change fields (validated by the caller) and stamp updated_at."""
    if "transfer_source_ids" in fields:  # a relationship, not a column: replaced as a whole
        audit.transfer_source_ids = fields.pop("transfer_source_ids")
    set_fields(audit, {**fields, "updated_at": utcnow()}, protected=("id", "created_at"))
    session.flush()
    return audit


def delete(*, session: Session, audit: Audit) -> None:
    """Delete an audit with its runs; the evaluation jobs they created stay."""
    session.delete(audit)
    session.flush()


# --- runs --------------------------------------------------------------------------------------------------


def get_run(*, session: Session, run_id: int) -> AuditRun | None:
    return session.get(AuditRun, run_id)


def get_run_by_slot(*, session: Session, audit_id: int, slot: str) -> AuditRun | None:
    return session.scalar(select(AuditRun).where(AuditRun.audit_id == audit_id, AuditRun.slot == slot))


def _runs_filtered(audit_id: int | None, status: str | Iterable[str] | None) -> Select[AuditRun]:
    statement = select(AuditRun)
    if audit_id is not None:
        statement = statement.where(AuditRun.audit_id == audit_id)
    if status is not None:
        statement = statement.where(AuditRun.status.in_([status] if isinstance(status, str) else [*status]))
    return statement


def list_runs(
    *,
    session: Session,
    audit_id: int | None = None,
    status: str | Iterable[str] | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> Sequence[AuditRun]:
    """Runs newest first."""
    return paginate(session, _runs_filtered(audit_id, status), AuditRun.id, limit=limit, offset=offset)


def count_runs(
    *, session: Session, audit_id: int | None = None, status: str | Iterable[str] | None = None
) -> int:
    return count_rows(session, _runs_filtered(audit_id, status))


def create_run(
    *,
    session: Session,
    audit: Audit,
    slot: str,
    trigger: str,
    scheduled_for: datetime | None = None,
    target_model_id: int | None = None,
) -> AuditRun | None:
    """A pending run for `slot`, or None when the audit already has a run for that slot.

    The insert runs in a savepoint: when a duplicated tick, a second beat or a concurrent request wrote the
    same (audit, slot) first, the unique constraint refuses it and only the savepoint is rolled back.
    """
    run = AuditRun(
        audit_id=audit.id,
        slot=slot,
        trigger=trigger,
        scheduled_for=scheduled_for,
        target_model_id=target_model_id,
        status=PENDING,
        thresholds=dict(audit.thresholds),
        webhook_attempts=0,
        created_at=utcnow(),
    )
    try:
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError:
        return None
    return run


def update_run(*, session: Session, run: AuditRun, **fields: Any) -> AuditRun:
    """Change plain fields of a run (its status only through transition_run)."""
    set_fields(run, fields, protected=_RUN_MANAGED)
    session.flush()
    return run


def transition_run(*, session: Session, run_id: int, from_status: str, to_status: str, **fields: Any) -> bool:
    """Set `to_status` (and `fields`) only if the run is still `from_status`; True if this call did it.

    Of two workers launching or finishing the same run, exactly one wins; the other finds nothing to do.
    """
    check_run_transition(from_status, to_status)
    statement = (
        sql_update(AuditRun)
        .where(AuditRun.id == run_id, AuditRun.status == from_status)
        .values(status=to_status, **fields)
        .execution_options(synchronize_session=False)
    )
    won = rows_matched(session, statement) == 1
    if won:
        run = session.get(AuditRun, run_id)
        if run is not None:
            session.refresh(run)
    return won


def delete_run(*, session: Session, run_id: int, status: str = PENDING) -> bool:
    """Delete a run that is still `status` (an undone "run now"); True if it was deleted."""
    statement = (
        sql_delete(AuditRun)
        .where(AuditRun.id == run_id, AuditRun.status == status)
        .execution_options(synchronize_session=False)
    )
    return rows_matched(session, statement) == 1


def list_latest_runs(
    *, session: Session, audit_ids: Iterable[int], status: str | None = None
) -> dict[int, AuditRun]:
    """The newest run (optionally of one status) of each audit, by audit id."""
    ids = [*audit_ids]
    if not ids:
        return {}
    newest = select(func.max(AuditRun.id)).where(AuditRun.audit_id.in_(ids))
    if status is not None:
        newest = newest.where(AuditRun.status == status)
    newest = newest.group_by(AuditRun.audit_id)
    return {run.audit_id: run for run in session.scalars(select(AuditRun).where(AuditRun.id.in_(newest)))}


def list_runs_with_unsent_jobs(*, session: Session, started_before: datetime) -> builtins.list[AuditRun]:
    """Running runs launched before `started_before` that never confirmed sending their jobs, oldest first."""
    return builtins.list(
        session.scalars(
            select(AuditRun)
            .where(
                AuditRun.status == RUNNING,
                AuditRun.jobs_sent_at.is_(None),
                AuditRun.started_at < started_before,
            )
            .order_by(AuditRun.id)
            .limit(MAX_LIMIT)
        )
    )


def list_idle_webhooks(*, session: Session, idle_before: datetime) -> builtins.list[AuditRun]:
    """Finished runs whose delivery is pending and whose last attempt (or finish) is older than `idle_before`."""
    last_activity = func.coalesce(AuditRun.webhook_at, AuditRun.finished_at)
    return builtins.list(
        session.scalars(
            select(AuditRun)
            .where(
                AuditRun.status == FINISHED,
                AuditRun.webhook_status == WEBHOOK_PENDING,
                last_activity < idle_before,
            )
            .order_by(AuditRun.id)
            .limit(MAX_LIMIT)
        )
    )


def _pending_delivery(run_id: int, attempts: int) -> Update:
    return sql_update(AuditRun).where(
        AuditRun.id == run_id,
        AuditRun.webhook_status == WEBHOOK_PENDING,
        AuditRun.webhook_attempts == attempts,
    )


def claim_webhook_attempt(*, session: Session, run_id: int, attempts: int, at: datetime) -> bool:
    """Count attempt `attempts + 1` of a pending delivery unless another caller counted it first (compare-and-set).

    Only the caller that gets True may POST: two messages for one delivery never make the same attempt.
    """
    statement = _pending_delivery(run_id, attempts).values(webhook_attempts=attempts + 1, webhook_at=at)
    return rows_matched(session, statement.execution_options(synchronize_session=False)) == 1


def record_webhook_attempt(
    *, session: Session, run_id: int, attempt: int, status: str, error: str | None, at: datetime
) -> bool:
    """Write the outcome of attempt `attempt`, unless a later attempt was claimed meanwhile."""
    statement = _pending_delivery(run_id, attempt).values(
        webhook_status=status, webhook_error=error, webhook_at=at
    )
    return rows_matched(session, statement.execution_options(synchronize_session=False)) == 1


def list_reference_jobs(
    *, session: Session, audit_id: int, before_run_id: int, limit: int = MAX_LIMIT, offset: int = 0
) -> builtins.list[tuple[int, Job]]:
    """(run id, job) of the earlier runs whose verdict makes them a baseline, newest run first; reports unloaded."""
    statement = (
        select(AuditRunJob.run_id, Job)
        .join(Job, Job.id == AuditRunJob.job_id)
        .join(AuditRun, AuditRun.id == AuditRunJob.run_id)
        .where(
            AuditRun.audit_id == audit_id,
            AuditRun.id < before_run_id,
            AuditRun.verdict.in_(REFERENCE_VERDICTS),
        )
        .order_by(AuditRun.id.desc(), Job.id.desc())
        .limit(limit)
        .offset(offset)
        .options(defer(Job.report))
    )
    return [(run_id, job) for run_id, job in session.execute(statement).all()]


# --- the jobs a run created ----------------------------------------------------------------------------------


def create_run_job(*, session: Session, run: AuditRun, job: Job) -> AuditRunJob:
    link = AuditRunJob(run_id=run.id, job_id=job.id)
    session.add(link)
    session.flush()
    return link


def list_run_jobs(
    *, session: Session, run_ids: Iterable[int], with_reports: bool = False
) -> builtins.list[tuple[int, Job]]:
    """(run id, job) for every job of the given runs, by job id; reports are left unloaded unless asked."""
    ids = [*run_ids]
    if not ids:
        return []
    statement = (
        select(AuditRunJob.run_id, Job)
        .join(Job, Job.id == AuditRunJob.job_id)
        .where(AuditRunJob.run_id.in_(ids))
        .order_by(Job.id)
    )
    if not with_reports:
        statement = statement.options(defer(Job.report))
    return [(run_id, job) for run_id, job in session.execute(statement).all()]


def get_run_for_job(*, session: Session, job_id: int) -> AuditRun | None:
    """The audit run that created job `job_id`, if any."""
    return session.scalar(
        select(AuditRun)
        .join(AuditRunJob, AuditRunJob.run_id == AuditRun.id)
        .where(AuditRunJob.job_id == job_id)
    )
