"""Jobs: CRUD plus race-safe status changes (compare-and-set UPDATEs: concurrent writers cannot both win)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Row, Select, func, or_, select
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session, selectinload

from db.base import utcnow
from db.errors import StaleJob
from db.models import Job
from db.repositories._common import DEFAULT_LIMIT, column_names, paginate, rows_matched, set_fields
from db.repositories._common import count as count_rows
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

# Status moves only through transition()/claim()/request_cancel(); attempts only through claim().
_MANAGED = frozenset({"id", "status", "attempts", "created_at"})


def get(*, session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)


def _filtered(
    status: str | Iterable[str] | None,
    model_id: int | None,
    dataset_id: int | None,
    ids: Iterable[int] | None,
) -> Select[Job]:
    statement = select(Job)
    if status is not None:
        statuses = [status] if isinstance(status, str) else [*status]
        statement = statement.where(Job.status.in_(statuses))
    if model_id is not None:
        statement = statement.where(Job.model_id == model_id)
    if dataset_id is not None:
        statement = statement.where(Job.dataset_id == dataset_id)
    if ids is not None:
        statement = statement.where(Job.id.in_([*ids]))
    return statement


def list(
    *,
    session: Session,
    status: str | Iterable[str] | None = None,
    model_id: int | None = None,
    dataset_id: int | None = None,
    ids: Iterable[int] | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> Sequence[Job]:
    return paginate(session, _filtered(status, model_id, dataset_id, ids), Job.id, limit=limit, offset=offset)


def count(
    *,
    session: Session,
    status: str | Iterable[str] | None = None,
    model_id: int | None = None,
    dataset_id: int | None = None,
    ids: Iterable[int] | None = None,
) -> int:
    return count_rows(session, _filtered(status, model_id, dataset_id, ids))


def create(
    *, session: Session, model_id: int, dataset_id: int, config: dict[str, Any], queue: str | None = None
) -> Job:
    """A queued job; the caller commits before enqueuing its id."""
    job = Job(
        model_id=model_id,
        dataset_id=dataset_id,
        config=config,
        queue=queue,
        status=QUEUED,
        progress=0.0,
        attempts=0,
        cancel_requested=False,
    )
    session.add(job)
    session.flush()
    return job


def update(*, session: Session, job: Job, **fields: Any) -> Job:
    """Change plain fields; status and attempts are refused here (use transition / claim)."""
    set_fields(job, fields, protected=_MANAGED)
    session.flush()
    return job


def delete(*, session: Session, job: Job) -> None:
    """Delete a job with its sweep points, CAM audit and artifact rows (the stored files stay)."""
    session.delete(job)
    session.flush()


def latest_succeeded(*, session: Session, model_ids: Iterable[int]) -> Sequence[Job]:
    """The newest succeeded job of each (model, dataset) pair among `model_ids`, with their datasets."""
    newest = (
        select(func.max(Job.id))
        .where(Job.model_id.in_([*model_ids]), Job.status == SUCCEEDED)
        .group_by(Job.model_id, Job.dataset_id)
    )
    statement = select(Job).where(Job.id.in_(newest)).options(selectinload(Job.dataset)).order_by(Job.id)
    return session.scalars(statement).all()


def list_abandoned(
    *, session: Session, heartbeat_before: datetime, limit: int = DEFAULT_LIMIT
) -> Sequence[Job]:
    """Running jobs whose last heartbeat is older than `heartbeat_before`: their worker is gone.

    A sharded job whose shards are still running or queued is not one of them: its shards are recovered
    one by one (shards.list_abandoned), and a shard waiting for a free worker is not a dead one.
    """
    in_one_piece = or_(Job.shards_total.is_(None), Job.shards_done >= Job.shards_total)
    statement = select(Job).where(Job.status == RUNNING, Job.heartbeat_at < heartbeat_before, in_one_piece)
    return session.scalars(statement.order_by(Job.id).limit(limit)).all()


def running_attempts(*, session: Session, job_ids: Iterable[int]) -> set[tuple[int, int]]:
    """(job id, attempt) of those of `job_ids` that are running now."""
    statement = select(Job.id, Job.attempts).where(Job.id.in_([*job_ids]), Job.status == RUNNING)
    return {(row.id, row.attempts) for row in session.execute(statement)}


def _current(session: Session, job_id: int) -> Row[str, int, bool, datetime | None]:
    row = session.execute(
        select(Job.status, Job.attempts, Job.cancel_requested, Job.heartbeat_at).where(Job.id == job_id)
    ).one_or_none()
    if row is None:
        raise StaleJob(f"job {job_id} no longer exists")
    return row


def _compare_and_set(
    session: Session, job_id: int, expected_status: str, expected_attempts: int | None, values: dict[str, Any]
) -> bool:
    """UPDATE the job only if it still has the status (and attempt) the caller saw; True if it did."""
    statement = sql_update(Job).where(Job.id == job_id, Job.status == expected_status)
    if expected_attempts is not None:
        statement = statement.where(Job.attempts == expected_attempts)
    return rows_matched(session, statement.values(**values).execution_options(synchronize_session=False)) == 1


def _defaults(new_status: str) -> dict[str, Any]:
    now = utcnow()
    if new_status == RUNNING:
        return {"started_at": now, "heartbeat_at": now}
    if new_status == QUEUED:  # the run was lost; the next claim starts over
        return {"progress": 0.0, "heartbeat_at": None}
    if new_status == SUCCEEDED:
        return {"progress": 1.0, "finished_at": now}
    return {"finished_at": now}


def transition(
    *, session: Session, job: Job, new_status: str, attempt: int | None = None, **fields: Any
) -> Job:
    """Move `job` to `new_status` (checked against the transition table) and set `fields` in the same UPDATE.

    The check uses the row's status as stored now, and the UPDATE applies only if it is still that status
    (and, with `attempt`, still that attempt — a worker passes the attempt its claim returned, so a run
    that was re-claimed elsewhere cannot finish the job). Otherwise InvalidTransition / StaleJob.
    """
    unknown = sorted(set(fields) - (column_names(Job) - _MANAGED))
    if unknown:
        raise ValueError(f"Job has no updatable field(s) {', '.join(unknown)}")
    session.flush()
    current = _current(session, job.id)
    if attempt is not None and current.attempts != attempt:
        raise StaleJob(
            f"job {job.id} is on attempt {current.attempts}, not {attempt}: another worker took it over"
        )
    check_transition(current.status, new_status)
    values = {"status": new_status, **_defaults(new_status), **fields}
    if not _compare_and_set(session, job.id, current.status, current.attempts, values):
        latest = _current(session, job.id)
        raise InvalidTransition(
            f"job {job.id} changed from {current.status} to {latest.status} meanwhile; "
            f"it cannot become {new_status} now"
        )
    session.refresh(job)
    return job


# Why a running job was taken over: its worker stopped sending heartbeats (what is known without its worker).
SILENT_WORKER = (
    "its worker stopped sending heartbeats (the process died or was killed, or its host went away)"
)


def attempts_exhausted(attempts: int, max_attempts: int | None, lost_reason: str | None) -> str | None:
    """The failure message of a job lost `attempts` times when at most `max_attempts` runs are allowed."""
    if max_attempts is None or attempts < max_attempts:
        return None
    times = "once" if attempts == 1 else f"{attempts} times"
    return (
        f"the worker died or was killed {times} while running this job, so it is not run again; "
        f"last: {lost_reason or SILENT_WORKER}"
    )


def claim(
    *,
    session: Session,
    job_id: int,
    worker_host: str,
    lease_s: float | None = None,
    max_attempts: int | None = None,
) -> Job | None:
    """Take a job for this worker: queued → running, attempts + 1, started_at set. None if not ours to run.

    One conditional UPDATE on (status, attempts) as read, so of several workers racing for the same job
    exactly one gets it. A running job is re-claimed too (its worker was lost and the broker redelivered
    the task) — unless `lease_s` is given and its heartbeat is younger than that, i.e. it is still alive.
    A job whose cancellation was requested is marked cancelled instead of being run, and one whose earlier
    attempts all were lost `max_attempts` times is marked failed with the last reason.
    """
    row = session.execute(
        select(Job.status, Job.attempts, Job.cancel_requested, Job.heartbeat_at, Job.lost_reason).where(
            Job.id == job_id
        )
    ).one_or_none()
    if row is None or row.status not in ACTIVE:
        return None
    now = utcnow()
    if (
        row.status == RUNNING
        and lease_s is not None
        and row.heartbeat_at is not None
        and now - row.heartbeat_at < timedelta(seconds=lease_s)
    ):
        return None
    if row.cancel_requested:
        _compare_and_set(session, job_id, row.status, row.attempts, {"status": CANCELLED, "finished_at": now})
        return None
    lost_reason = (
        SILENT_WORKER if row.status == RUNNING else row.lost_reason
    )  # RUNNING: taking over a dead run
    exhausted = attempts_exhausted(row.attempts, max_attempts, lost_reason)
    if exhausted is not None:
        _compare_and_set(
            session,
            job_id,
            row.status,
            row.attempts,
            {"status": FAILED, "finished_at": now, "error": exhausted, "lost_reason": lost_reason},
        )
        return None
    won = _compare_and_set(
        session,
        job_id,
        row.status,
        row.attempts,
        {
            "status": RUNNING,
            "attempts": Job.attempts + 1,
            "started_at": now,
            "heartbeat_at": now,
            "worker_host": worker_host,
            "progress": 0.0,
            "error": None,
            "finished_at": None,
            "lost_reason": lost_reason,
        },
    )
    return session.get(Job, job_id, populate_existing=True) if won else None


class Heartbeat(NamedTuple):
    """What a running job learns when it reports: whether it still owns the job, whether to stop."""

    lost: bool  # the job is not running under this attempt any more (taken over, or ended elsewhere)
    cancel_requested: bool

    @property
    def stop(self) -> bool:
        return self.lost or self.cancel_requested


def report_progress(
    *, session: Session, job_id: int, progress: float, attempt: int | None = None
) -> Heartbeat:
    """Record progress (clamped to [0, 1]) and a heartbeat, also while a cancel is pending.

    The heartbeat must not stop when a cancel is requested: a job busy in a long batch would then look
    dead to the requeue sweep and be queued again instead of ending cancelled.
    """
    statement = sql_update(Job).where(Job.id == job_id, Job.status == RUNNING)
    if attempt is not None:
        statement = statement.where(Job.attempts == attempt)
    values = {"progress": min(max(float(progress), 0.0), 1.0), "heartbeat_at": utcnow()}
    if rows_matched(session, statement.values(**values).execution_options(synchronize_session=False)) != 1:
        return Heartbeat(lost=True, cancel_requested=False)
    cancel = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    return Heartbeat(lost=False, cancel_requested=bool(cancel))


def request_cancel(*, session: Session, job: Job) -> Job:
    """Cancel a queued job now; flag a running one so its worker stops at the next batch boundary."""
    session.flush()
    current = _current(session, job.id)
    if current.status in TERMINAL:
        raise InvalidTransition(f"job {job.id} is already {current.status}; there is nothing to cancel")
    # The flag first: a worker claiming at the same moment then either sees it or loses the race below.
    session.execute(
        sql_update(Job)
        .where(Job.id == job.id, Job.status.in_(ACTIVE))
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    _compare_and_set(session, job.id, QUEUED, None, {"status": CANCELLED, "finished_at": utcnow()})
    session.refresh(job)
    return job
