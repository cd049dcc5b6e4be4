"""Shards of sharded jobs: creation, race-safe claims and status changes, progress, and the job's counter.

Every status change is a compare-and-set UPDATE fenced by the shard's attempt, as for jobs: of two workers
holding the same shard (a redelivered task), only the one whose claim is current can finish it.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import case, func, select
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session

from db.base import utcnow
from db.errors import StaleJob
from db.models import Job, JobShard
from db.repositories._common import rows_matched
from db.repositories.jobs import SILENT_WORKER, Heartbeat, attempts_exhausted
from services.job_states import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, check_transition

SWEEP_SHARE = 0.95  # of a job's progress: the shards' sweeps; the rest is the merge (as for one worker)


def get(*, session: Session, job_id: int, shard_index: int) -> JobShard | None:
    statement = select(JobShard).where(JobShard.job_id == job_id, JobShard.shard_index == shard_index)
    return session.scalars(statement).one_or_none()


def list(*, session: Session, job_id: int) -> Sequence[JobShard]:
    """The job's shards in sample order."""
    statement = select(JobShard).where(JobShard.job_id == job_id).order_by(JobShard.shard_index)
    return session.scalars(statement).all()


def create(*, session: Session, job: Job, ranges: Sequence[tuple[int, int]]) -> Sequence[JobShard]:
    """The job's shards over `ranges` (start, stop), queued, and its counter; the existing ones when a
    redelivered task creates them again (done shards stay done: their outcomes are the same numbers)."""
    existing = list(session=session, job_id=job.id)
    if existing:
        if [(s.sample_start, s.sample_stop) for s in existing] != [tuple(r) for r in ranges]:
            raise StaleJob(f"job {job.id} was cut into other shards before; it cannot be cut again")
        return existing
    for index, (start, stop) in enumerate(ranges):
        session.add(JobShard(job_id=job.id, shard_index=index, sample_start=start, sample_stop=stop))
    session.execute(
        sql_update(Job)
        .where(Job.id == job.id)
        .values(shards_total=len(ranges), shards_done=0)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    session.refresh(job)
    return list(session=session, job_id=job.id)


def update(*, session: Session, shard: JobShard, **fields: Any) -> JobShard:
    """Plain fields only; status, attempts and the sample range move through claim / transition."""
    protected = {"id", "job_id", "shard_index", "sample_start", "sample_stop", "status", "attempts"}
    unknown = sorted(set(fields) & protected)
    if unknown:
        raise ValueError(f"JobShard field(s) {', '.join(unknown)} cannot be updated directly")
    for key, value in fields.items():
        setattr(shard, key, value)
    session.flush()
    return shard


class ShardClaim(NamedTuple):
    """What a shard task may do: run `shard` (a new attempt), wait `retry_after_s`, or nothing."""

    shard: JobShard | None = None
    retry_after_s: float | None = None
    failed_job: str | None = None  # the job failed here: this shard was lost too often (the message)


def claim(
    *,
    session: Session,
    job_id: int,
    shard_index: int,
    worker_host: str,
    lease_s: float | None = None,
    max_attempts: int | None = None,
) -> ShardClaim:
    """Take a queued shard, or a running one whose heartbeat is older than the lease (its worker is gone).

    Nothing to do when the shard is done, or its job is not running (cancelled, failed: the shard becomes
    cancelled). A shard lost `max_attempts` times fails, and its job with it.
    """
    shard = get(session=session, job_id=job_id, shard_index=shard_index)
    job = session.get(Job, job_id)
    if shard is None or job is None or shard.status not in (QUEUED, RUNNING):
        return ShardClaim()
    now = utcnow()
    if job.status != RUNNING or job.cancel_requested:
        _compare_and_set(session, shard, {"status": CANCELLED, "finished_at": now})
        if job.status == RUNNING:  # cancelled while its shards waited for a worker: it ends here
            _end_job(session, job_id, CANCELLED, None)
        return ShardClaim()
    if shard.status == RUNNING and lease_s is not None and shard.heartbeat_at is not None:
        age = (now - shard.heartbeat_at) / timedelta(seconds=1)
        if age < lease_s:
            return ShardClaim(retry_after_s=lease_s - age + 1.0)
    lost_reason = SILENT_WORKER if shard.status == RUNNING else shard.lost_reason
    exhausted = attempts_exhausted(shard.attempts, max_attempts, lost_reason)
    if exhausted is not None:
        message = f"shard {shard_index} (samples {shard.sample_start}…{shard.sample_stop - 1}): {exhausted}"
        if _compare_and_set(session, shard, {"status": FAILED, "finished_at": now, "error": exhausted}):
            _end_job(session, job_id, FAILED, message)
        return ShardClaim(failed_job=message)
    won = _compare_and_set(
        session,
        shard,
        {
            "status": RUNNING,
            "attempts": JobShard.attempts + 1,
            "worker_host": worker_host,
            "started_at": now,
            "heartbeat_at": now,
            "progress": 0.0,
            "error": None,
            "lost_reason": lost_reason,
        },
    )
    return ShardClaim(shard=session.get(JobShard, shard.id, populate_existing=True) if won else None)


def _compare_and_set(session: Session, shard: JobShard, values: dict[str, Any]) -> bool:
    """UPDATE the shard only if it still has the status and attempt read into `shard`."""
    statement = sql_update(JobShard).where(
        JobShard.id == shard.id, JobShard.status == shard.status, JobShard.attempts == shard.attempts
    )
    return rows_matched(session, statement.values(**values).execution_options(synchronize_session=False)) == 1


def _end_job(session: Session, job_id: int, status: str, error: str | None) -> bool:
    """A running job ends `status` (failed or cancelled); True if it was still running."""
    statement = sql_update(Job).where(Job.id == job_id, Job.status == RUNNING)
    values: dict[str, Any] = {"status": status, "finished_at": utcnow()}
    if status == FAILED:
        values["error"] = error
    return rows_matched(session, statement.values(**values).execution_options(synchronize_session=False)) == 1


def transition(
    *, session: Session, shard: JobShard, new_status: str, attempt: int, **fields: Any
) -> JobShard:
    """Move a shard of attempt `attempt` to `new_status` (the job transition table); StaleJob when another
    attempt holds it or it changed meanwhile."""
    session.refresh(shard)
    if shard.attempts != attempt:
        raise StaleJob(f"shard {shard.shard_index} of job {shard.job_id} is on attempt {shard.attempts}")
    check_transition(shard.status, new_status)
    values = {"status": new_status, **fields}
    if new_status != QUEUED:
        values.setdefault("finished_at", utcnow())
    if not _compare_and_set(session, shard, values):
        raise StaleJob(f"shard {shard.shard_index} of job {shard.job_id} changed meanwhile")
    session.refresh(shard)
    return shard


class Completion(NamedTuple):
    done: int  # the job's finished shards, this one included
    total: int

    @property
    def last(self) -> bool:
        """This shard brought the counter to the total: its worker merges."""
        return self.done == self.total


def complete(
    *, session: Session, shard: JobShard, attempt: int, worker_host: str, outcome_key: str, seconds: float
) -> Completion:
    """Mark the shard succeeded and count it on its job, in one transaction (the caller's).

    The counter moves in one UPDATE … RETURNING, so of shards finishing together exactly one reads the
    total; that one also takes the job (worker_host, heartbeat) for the merge. StaleJob when the job is not
    running any more (cancelled or failed meanwhile) or another attempt holds the shard: nothing is counted.
    """
    transition(
        session=session,
        shard=shard,
        new_status=SUCCEEDED,
        attempt=attempt,
        outcome_key=outcome_key,
        seconds=seconds,
        progress=1.0,
        heartbeat_at=utcnow(),
    )
    last = Job.shards_done + 1 == Job.shards_total
    statement = (
        sql_update(Job)
        .where(Job.id == shard.job_id, Job.status == RUNNING, Job.cancel_requested.is_(False))
        .values(
            shards_done=Job.shards_done + 1,
            heartbeat_at=utcnow(),
            worker_host=case((last, worker_host), else_=Job.worker_host),
        )
        .returning(Job.shards_done, Job.shards_total)
        .execution_options(synchronize_session=False)
    )
    row = session.execute(statement).one_or_none()
    if row is None or row.shards_total is None:
        raise StaleJob(
            f"job {shard.job_id} is not running any more: shard {shard.shard_index} is not counted"
        )
    return Completion(row.shards_done, row.shards_total)


def report_progress(*, session: Session, shard: JobShard, attempt: int, progress: float) -> Heartbeat:
    """The shard's progress and heartbeat, and the job's: its progress the shards' sum, weighted by size.

    Lost when another attempt holds the shard or the job is not running; the job's cancel flag otherwise.
    """
    now = utcnow()
    statement = sql_update(JobShard).where(
        JobShard.id == shard.id, JobShard.status == RUNNING, JobShard.attempts == attempt
    )
    values = {"progress": min(max(float(progress), 0.0), 1.0), "heartbeat_at": now}
    if rows_matched(session, statement.values(**values).execution_options(synchronize_session=False)) != 1:
        return Heartbeat(lost=True, cancel_requested=False)
    size = JobShard.sample_stop - JobShard.sample_start
    done = (
        select(func.sum(JobShard.progress * size) / func.sum(size))
        .where(JobShard.job_id == shard.job_id)
        .scalar_subquery()
    )
    job_update = sql_update(Job).where(Job.id == shard.job_id, Job.status == RUNNING)
    job_values = {"progress": done * SWEEP_SHARE, "heartbeat_at": now}  # each shard is clamped to [0, 1]
    if (
        rows_matched(session, job_update.values(**job_values).execution_options(synchronize_session=False))
        != 1
    ):
        return Heartbeat(lost=True, cancel_requested=False)
    cancel = session.scalar(select(Job.cancel_requested).where(Job.id == shard.job_id))
    return Heartbeat(lost=False, cancel_requested=bool(cancel))


def list_abandoned(*, session: Session, heartbeat_before: datetime) -> builtins.list[JobShard]:
    """Running shards of running jobs whose heartbeat is older than `heartbeat_before`: their worker is gone."""
    statement = (
        select(JobShard)
        .join(Job, Job.id == JobShard.job_id)
        .where(Job.status == RUNNING, JobShard.status == RUNNING, JobShard.heartbeat_at < heartbeat_before)
        .order_by(JobShard.job_id, JobShard.shard_index)
    )
    return builtins.list(session.scalars(statement))


def end_with_job(*, session: Session, shard: JobShard, attempt: int, status: str, error: str | None) -> bool:
    """The shard ended `status` (failed or cancelled) and takes its running job with it; True if the job
    was still running (this shard decided its outcome)."""
    transition(session=session, shard=shard, new_status=status, attempt=attempt, error=error)
    return _end_job(session, shard.job_id, status, error)
