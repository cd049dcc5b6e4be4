"""Run one shard of a sharded job: claim it, sweep its samples, store its outcomes, count it on the job,
and merge when it was the last. Also the recovery of shards whose worker died."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from db import repositories as repo
from db.base import utcnow
from db.errors import StaleJob
from db.models import JobShard
from db.session import session_scope
from services.errors import EvaluationCancelled
from services.evaluation import resolve_device, sweep_range
from services.job_states import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, InvalidTransition
from services.shard_outcomes import sweep_to_npz
from worker import scratch
from worker.job_control import JobControl, StopReason, time_limit_message, watched
from worker.messages import public_message
from worker.runner import JobLeased, WorkerContext, _aliases, _load_model, _open_dataset, job_config
from worker.shard_merge import merge_shards

log = logging.getLogger(__name__)

SendShard = Callable[[int, int, str | None], None]


class ShardControl(JobControl):
    """JobControl for one attempt of one shard: its heartbeat and progress go to the shard's row (and the
    job's progress, the sum over shards); it stops when the job is cancelled or ended elsewhere."""

    def __init__(self, context: WorkerContext, shard: JobShard, attempt: int) -> None:
        super().__init__(context, shard.job_id, attempt)
        self.shard = shard

    sweep_share = 1.0  # a shard's progress is its sweep (the merge is the job's)

    def _report(self, session):
        return repo.shards.report_progress(
            session=session, shard=self.shard, attempt=self.attempt, progress=self.fraction
        )

    def end_by_force(self) -> bool:
        if self.reason is StopReason.LOST:
            return True
        status = CANCELLED if self.reason is StopReason.CANCELLED else FAILED
        error = (
            None
            if status == CANCELLED
            else f"{describe(self.shard)}: {time_limit_message(self.context.time_limit_s)}"
        )
        return end_shard(self.context, self.shard, self.attempt, status, error) is not None


def describe(shard: JobShard) -> str:
    return f"shard {shard.shard_index} (samples {shard.sample_start}…{shard.sample_stop - 1})"


def end_shard(
    context: WorkerContext, shard: JobShard, attempt: int, status: str, error: str | None
) -> str | None:
    """The shard ended `status` (failed, cancelled) and its job with it; None when it was not ours to end."""
    try:
        with session_scope(context.sessions) as session:
            row = repo.shards.get(session=session, job_id=shard.job_id, shard_index=shard.shard_index)
            if row is None:
                return None
            repo.shards.end_with_job(session=session, shard=row, attempt=attempt, status=status, error=error)
        return status
    except (StaleJob, InvalidTransition) as failure:
        log.info("job %s %s: not marking %s: %s", shard.job_id, describe(shard), status, failure)
        return None


def run_shard(job_id: int, shard_index: int, context: WorkerContext) -> str | None:
    """Claim and run one shard; its final status (the job's, when this worker merged), or None when there
    was nothing to do. Raises JobLeased while another worker holds the shard under a live lease."""
    with session_scope(context.sessions) as session:
        claim = repo.shards.claim(
            session=session,
            job_id=job_id,
            shard_index=shard_index,
            worker_host=context.host,
            lease_s=context.lease_s,
            max_attempts=context.max_attempts,
        )
        if claim.retry_after_s is not None:
            raise JobLeased(job_id, claim.retry_after_s)
        if claim.shard is None:
            return FAILED if claim.failed_job else None
        shard, job = claim.shard, claim.shard.job
        attempt, job_attempt = shard.attempts, job.attempts
        model_record, dataset_record, config_data = job.model, job.dataset, dict(job.config)
        session.expunge_all()
    control = ShardControl(context, shard, attempt)
    aliases: dict[str, str] = {}
    try:
        config = job_config(config_data, context)
        device = str(resolve_device(config.device))
        with (
            watched(control, context.kill),
            scratch.job_folder(context.scratch_root, job_id, job_attempt) as workdir,
        ):
            aliases = _aliases(context, model_record, dataset_record, workdir)
            loaded = _load_model(model_record, context, device)
            dataset = _open_dataset(dataset_record, context, workdir)
            started = time.perf_counter()
            sweep = sweep_range(
                loaded,
                dataset,
                config,
                shard.sample_start,
                shard.sample_stop,
                progress=control.progress,
                should_stop=control.should_stop,
            )
            seconds = time.perf_counter() - started
            key, _, _ = context.store.put_bytes(sweep_to_npz(sweep, shard.sample_start))
            with session_scope(context.sessions) as session:
                row = repo.shards.get(session=session, job_id=job_id, shard_index=shard_index)
                assert row is not None  # shards go only with their job
                completion = repo.shards.complete(
                    session=session,
                    shard=row,
                    attempt=attempt,
                    worker_host=context.host,
                    outcome_key=key,
                    seconds=seconds,
                )
        if completion.last:
            return merge_shards(context, job_id, job_attempt)
        return SUCCEEDED
    except EvaluationCancelled:
        if control.reason is StopReason.TIME_LIMIT:
            message = f"{describe(shard)}: {time_limit_message(context.time_limit_s)}"
            return end_shard(context, shard, attempt, FAILED, message)
        if control.reason is StopReason.CANCELLED:
            return end_shard(context, shard, attempt, CANCELLED, None)
        return _abandon(context, shard, attempt)
    except (StaleJob, InvalidTransition) as error:  # the job ended meanwhile, or another attempt holds it
        log.info("job %s %s attempt %s lost: %s", job_id, describe(shard), attempt, error)
        return _abandon(context, shard, attempt)
    except Exception as error:  # a model's own code can raise anything: the job fails with its message
        log.exception("job %s %s failed", job_id, describe(shard))
        return end_shard(
            context, shard, attempt, FAILED, f"{describe(shard)}: {public_message(error, aliases)}"
        )


def _abandon(context: WorkerContext, shard: JobShard, attempt: int) -> None:
    """A shard that stopped because its job is over (cancelled or failed elsewhere) is marked cancelled."""
    try:
        with session_scope(context.sessions) as session:
            row = repo.shards.get(session=session, job_id=shard.job_id, shard_index=shard.shard_index)
            job = repo.jobs.get(session=session, job_id=shard.job_id)
            if row is not None and job is not None and job.status != RUNNING:
                repo.shards.transition(session=session, shard=row, new_status=CANCELLED, attempt=attempt)
    except (StaleJob, InvalidTransition):  # another attempt holds it: that one decides
        pass
    return None


def settle_lost_shard(
    context: WorkerContext, job_id: int, shard_index: int, worker_host: str, *, timed_out: bool, reason: str
) -> str | None:
    """A shard's process died under Celery's eyes: killed at the hard time limit, the job fails; lost, the
    shard is queued again (its redelivered message runs it at once) or fails past max_attempts."""
    with session_scope(context.sessions) as session:
        shard = repo.shards.get(session=session, job_id=job_id, shard_index=shard_index)
        if shard is None or shard.status != RUNNING or shard.worker_host != worker_host:
            return None
        if timed_out:
            message = f"{describe(shard)}: {time_limit_message(context.time_limit_s)}; its process was killed"
            repo.shards.end_with_job(
                session=session, shard=shard, attempt=shard.attempts, status=FAILED, error=message
            )
            return FAILED
        return _requeue(session, shard, reason, context.max_attempts)


def _requeue(session, shard: JobShard, reason: str, max_attempts: int | None) -> str | None:
    exhausted = repo.jobs.attempts_exhausted(shard.attempts, max_attempts, reason)
    try:
        if exhausted:
            repo.shards.end_with_job(
                session=session,
                shard=shard,
                attempt=shard.attempts,
                status=FAILED,
                error=f"{describe(shard)}: {exhausted}",
            )
            return FAILED
        repo.shards.transition(
            session=session,
            shard=shard,
            new_status=QUEUED,
            attempt=shard.attempts,
            lost_reason=reason,
            worker_host=None,
        )
    except (StaleJob, InvalidTransition):
        return None
    log.warning("job %s %s: its process was lost (%s); queued again", shard.job_id, describe(shard), reason)
    return QUEUED


def requeue_abandoned_shards(context: WorkerContext, send: SendShard) -> list[tuple[int, int]]:
    """Queue again the running shards whose heartbeat is older than the lease, and send their tasks again
    (the embedded SQLite broker never redelivers by itself); (job id, shard index) of each."""
    if not context.lease_s:
        return []
    cutoff = utcnow() - timedelta(seconds=context.lease_s)
    requeued: list[tuple[int, int, str | None]] = []
    with session_scope(context.sessions) as session:
        for shard in repo.shards.list_abandoned(session=session, heartbeat_before=cutoff):
            if _requeue(session, shard, repo.jobs.SILENT_WORKER, context.max_attempts) == QUEUED:
                requeued.append((shard.job_id, shard.shard_index, shard.job.queue))
    for job_id, index, queue in requeued:  # after the commit: the worker must find the shard queued
        send(job_id, index, queue)
    return [(job_id, index) for job_id, index, _ in requeued]
