"""Transfer jobs: CRUD, race-safe status changes as for jobs (compare-and-set UPDATEs), and their matrix."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, Select, func, select
from sqlalchemy import delete as sql_delete
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session, selectinload

from db.base import utcnow
from db.errors import StaleJob
from db.models import TransferJob, TransferJobModel, TransferPointRecord
from db.repositories._common import DEFAULT_LIMIT, column_names, paginate, rows_matched
from db.repositories._common import count as count_rows
from db.repositories.jobs import SILENT_WORKER, Heartbeat, attempts_exhausted
from services.job_states import (
    ACTIVE,
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    InvalidTransition,
    check_transition,
)

_MANAGED = frozenset({"id", "status", "attempts", "created_at"})


def get(*, session: Session, transfer_id: int) -> TransferJob | None:
    return session.get(TransferJob, transfer_id)


def _filtered(status: str | None, dataset_id: int | None, model_id: int | None) -> Select[TransferJob]:
    statement = select(TransferJob)
    if status is not None:
        statement = statement.where(TransferJob.status == status)
    if dataset_id is not None:
        statement = statement.where(TransferJob.dataset_id == dataset_id)
    if model_id is not None:
        linked = select(TransferJobModel.transfer_job_id).where(TransferJobModel.model_id == model_id)
        statement = statement.where(TransferJob.id.in_(linked))
    return statement


def list(
    *,
    session: Session,
    status: str | None = None,
    dataset_id: int | None = None,
    model_id: int | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> Sequence[TransferJob]:
    statement = _filtered(status, dataset_id, model_id).options(selectinload(TransferJob.models))
    return paginate(session, statement, TransferJob.id, limit=limit, offset=offset)


def count(
    *, session: Session, status: str | None = None, dataset_id: int | None = None, model_id: int | None = None
) -> int:
    return count_rows(session, _filtered(status, dataset_id, model_id))


def create(
    *,
    session: Session,
    dataset_id: int,
    source_ids: Sequence[int],
    target_ids: Sequence[int],
    config: dict[str, Any],
    queue: str | None = None,
) -> TransferJob:
    """A queued transfer job with its models; the caller commits before enqueuing its id."""
    job = TransferJob(
        dataset_id=dataset_id, config=config, queue=queue, status=QUEUED, progress=0.0, attempts=0
    )
    job.models = [TransferJobModel(model_id=i, role="source") for i in source_ids] + [
        TransferJobModel(model_id=i, role="target") for i in target_ids
    ]
    session.add(job)
    session.flush()
    return job


def delete(*, session: Session, transfer_job: TransferJob) -> None:
    """Delete a transfer job with its model links and points."""
    session.delete(transfer_job)
    session.flush()


def _compare_and_set(
    session: Session, job_id: int, status: str, attempts: int | None, values: dict[str, Any]
) -> bool:
    statement = sql_update(TransferJob).where(TransferJob.id == job_id, TransferJob.status == status)
    if attempts is not None:
        statement = statement.where(TransferJob.attempts == attempts)
    return rows_matched(session, statement.values(**values).execution_options(synchronize_session=False)) == 1


def _current(session: Session, job_id: int) -> Row[str, int]:
    row = session.execute(
        select(TransferJob.status, TransferJob.attempts).where(TransferJob.id == job_id)
    ).one_or_none()
    if row is None:
        raise StaleJob(f"transfer job {job_id} no longer exists")
    return row


def _defaults(new_status: str) -> dict[str, Any]:
    now = utcnow()
    if new_status == RUNNING:
        return {"started_at": now, "heartbeat_at": now}
    if new_status == QUEUED:
        return {"progress": 0.0, "heartbeat_at": None}
    if new_status == SUCCEEDED:
        return {"progress": 1.0, "finished_at": now}
    return {"finished_at": now}


def transition(
    *, session: Session, transfer_job: TransferJob, new_status: str, attempt: int | None = None, **fields: Any
) -> TransferJob:
    """As jobs.transition: checked against the transition table, applied only if the row is still as read."""
    unknown = sorted(set(fields) - (column_names(TransferJob) - _MANAGED))
    if unknown:
        raise ValueError(f"TransferJob has no updatable field(s) {', '.join(unknown)}")
    session.flush()
    current = _current(session, transfer_job.id)
    if attempt is not None and current.attempts != attempt:
        raise StaleJob(f"transfer job {transfer_job.id} is on attempt {current.attempts}, not {attempt}")
    check_transition(current.status, new_status)
    values = {"status": new_status, **_defaults(new_status), **fields}
    if not _compare_and_set(session, transfer_job.id, current.status, current.attempts, values):
        raise InvalidTransition(
            f"transfer job {transfer_job.id} changed meanwhile; it cannot become {new_status} now"
        )
    session.refresh(transfer_job)
    return transfer_job


def claim(
    *,
    session: Session,
    transfer_id: int,
    worker_host: str,
    lease_s: float | None = None,
    max_attempts: int | None = None,
) -> TransferJob | None:
    """As jobs.claim: queued (or running with an expired lease) → running, attempts + 1; None if not ours."""
    row = session.execute(
        select(
            TransferJob.status,
            TransferJob.attempts,
            TransferJob.cancel_requested,
            TransferJob.heartbeat_at,
            TransferJob.lost_reason,
        ).where(TransferJob.id == transfer_id)
    ).one_or_none()
    if row is None or row.status not in ACTIVE:
        return None
    now = utcnow()
    alive = row.heartbeat_at is not None and now - row.heartbeat_at < timedelta(seconds=lease_s or 0)
    if row.status == RUNNING and lease_s is not None and alive:
        return None
    if row.cancel_requested:
        _compare_and_set(
            session, transfer_id, row.status, row.attempts, {"status": CANCELLED, "finished_at": now}
        )
        return None
    lost_reason = SILENT_WORKER if row.status == RUNNING else row.lost_reason
    exhausted = attempts_exhausted(row.attempts, max_attempts, lost_reason)
    if exhausted is not None:
        values = {"status": FAILED, "finished_at": now, "error": exhausted, "lost_reason": lost_reason}
        _compare_and_set(session, transfer_id, row.status, row.attempts, values)
        return None
    won = _compare_and_set(
        session,
        transfer_id,
        row.status,
        row.attempts,
        {
            "status": RUNNING,
            "attempts": TransferJob.attempts + 1,
            "started_at": now,
            "heartbeat_at": now,
            "worker_host": worker_host,
            "progress": 0.0,
            "error": None,
            "finished_at": None,
            "lost_reason": lost_reason,
        },
    )
    return session.get(TransferJob, transfer_id, populate_existing=True) if won else None


def report_progress(
    *, session: Session, transfer_id: int, progress: float, attempt: int | None = None
) -> Heartbeat:
    """Progress and a heartbeat of a running attempt; whether it is lost or asked to stop."""
    statement = sql_update(TransferJob).where(TransferJob.id == transfer_id, TransferJob.status == RUNNING)
    if attempt is not None:
        statement = statement.where(TransferJob.attempts == attempt)
    values = {"progress": min(max(float(progress), 0.0), 1.0), "heartbeat_at": utcnow()}
    if rows_matched(session, statement.values(**values).execution_options(synchronize_session=False)) != 1:
        return Heartbeat(lost=True, cancel_requested=False)
    cancel = session.scalar(select(TransferJob.cancel_requested).where(TransferJob.id == transfer_id))
    return Heartbeat(lost=False, cancel_requested=bool(cancel))


def request_cancel(*, session: Session, transfer_job: TransferJob) -> TransferJob:
    """Cancel a queued transfer job now; flag a running one so its worker stops at the next batch."""
    session.flush()
    current = _current(session, transfer_job.id)
    if current.status in TERMINAL:
        raise InvalidTransition(
            f"transfer job {transfer_job.id} is already {current.status}; there is nothing to cancel"
        )
    session.execute(
        sql_update(TransferJob)
        .where(TransferJob.id == transfer_job.id, TransferJob.status.in_(ACTIVE))
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    _compare_and_set(session, transfer_job.id, QUEUED, None, {"status": CANCELLED, "finished_at": utcnow()})
    session.refresh(transfer_job)
    return transfer_job


def list_abandoned(
    *, session: Session, heartbeat_before: datetime, limit: int = DEFAULT_LIMIT
) -> Sequence[TransferJob]:
    """Running transfer jobs whose last heartbeat is older than `heartbeat_before`."""
    statement = select(TransferJob).where(
        TransferJob.status == RUNNING, TransferJob.heartbeat_at < heartbeat_before
    )
    return session.scalars(statement.order_by(TransferJob.id).limit(limit)).all()


def replace_points(*, session: Session, transfer_job: TransferJob, points: Iterable[dict[str, Any]]) -> None:
    """The job's matrix, replacing any earlier one (a redelivered task writes the same rows, not twice)."""
    session.execute(
        sql_delete(TransferPointRecord).where(TransferPointRecord.transfer_job_id == transfer_job.id)
    )
    session.add_all(TransferPointRecord(transfer_job_id=transfer_job.id, **point) for point in points)
    session.flush()
    session.expire(transfer_job, ["points"])


def worst_points(
    *, session: Session, target_ids: Iterable[int], dataset_id: int | None = None
) -> builtins.list[TransferPointRecord]:
    """Each target's worst cases over the other sources and every attack (attack `all`), ε by ε, from the
    newest succeeded transfer job that has them."""
    targets = [*target_ids]
    worst = (
        TransferPointRecord.target_model_id.in_(targets),
        TransferPointRecord.source_model_id.is_(None),
        TransferPointRecord.attack == "all",
        TransferJob.status == SUCCEEDED,
    )
    newest = (
        select(TransferPointRecord.target_model_id, func.max(TransferJob.id))
        .join(TransferJob, TransferPointRecord.transfer_job_id == TransferJob.id)
        .where(*worst)
        .group_by(TransferPointRecord.target_model_id)
    )
    if dataset_id is not None:
        newest = newest.where(TransferJob.dataset_id == dataset_id)
    chosen = {target: job_id for target, job_id in session.execute(newest)}
    if not chosen:
        return []
    statement = (
        select(TransferPointRecord)
        .join(TransferJob, TransferPointRecord.transfer_job_id == TransferJob.id)
        .where(*worst, TransferPointRecord.transfer_job_id.in_(set(chosen.values())))
        .order_by(TransferPointRecord.target_model_id, TransferPointRecord.eps)
    )
    return [p for p in session.scalars(statement) if chosen.get(p.target_model_id) == p.transfer_job_id]
