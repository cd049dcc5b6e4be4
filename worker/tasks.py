"""Celery tasks: thin wrappers that pass ids to worker.runner."""

from __future__ import annotations

from functools import lru_cache

from celery.exceptions import SoftTimeLimitExceeded

from db.session import make_engine, make_session_factory
from db.settings import get_settings
from db.storage import LocalArtifactStore
from worker.audits import job_ended
from worker.celery_app import DEFAULT_QUEUE, EVALUATE_TASK, REQUEUE_TASK, app
from worker.runner import JobLeased, WorkerContext, requeue_abandoned, run_job


@lru_cache(maxsize=1)
def worker_context() -> WorkerContext:
    """One engine, session factory and artifact store per worker process."""
    settings = get_settings()
    sessions = make_session_factory(make_engine(settings.database_url))
    return WorkerContext(sessions=sessions, store=LocalArtifactStore(settings.artifact_root),
                         device=settings.device, progress_interval_s=settings.progress_interval_s,
                         lease_s=settings.job_lease_s)


# max_retries=None: a job held under a live lease is asked about again for as long as it runs.
@app.task(name=EVALUATE_TASK, bind=True, ignore_result=True, max_retries=None, throws=(SoftTimeLimitExceeded,))
def evaluate(self, job_id: int) -> str | None:
    """Run evaluation job `job_id` (idempotent: a redelivered or duplicate task finds nothing to do)."""
    try:
        status = run_job(int(job_id), worker_context())
    except JobLeased as leased:
        # Redelivered while another worker runs the job (worker lost and requeued, visibility timeout,
        # cold shutdown): keep a message alive rather than drop it, in case that worker dies too.
        raise self.retry(countdown=leased.retry_after_s) from None
    # Also when this call ran nothing (e.g. the job was cancelled while queued): the job may have ended.
    job_ended(int(job_id))
    return status


@app.task(name=REQUEUE_TASK, ignore_result=True)  # on the control queue (worker.celery_app.CONTROL_TASKS)
def requeue_abandoned_jobs() -> list[int]:
    """Sent by beat: queue again the jobs whose worker stopped sending heartbeats."""
    return requeue_abandoned(worker_context(), send=lambda job_id, queue: evaluate.apply_async(
        args=[job_id], queue=queue or DEFAULT_QUEUE))
