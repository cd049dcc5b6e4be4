"""The Celery application, configured from settings (ADVAUDIT_* environment variables)."""

from __future__ import annotations

from celery import Celery

from db.settings import get_settings

EVALUATE_TASK = "advaudit.evaluate"
DEFAULT_QUEUE = "evaluations"
GPU_QUEUE = "gpu"


def make_celery() -> Celery:
    """A Celery app whose tasks survive worker loss: late acks, redelivery on a lost worker, prefetch 1."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("advaudit", broker=settings.broker_url, backend=settings.result_backend, include=["worker.tasks"])
    app.conf.update(
        task_acks_late=True,  # a task is acknowledged only after it finished …
        task_reject_on_worker_lost=True,  # … and requeued when its worker process dies mid-run
        worker_prefetch_multiplier=1,  # one job at a time per process: evaluations are long
        task_default_queue=DEFAULT_QUEUE,
        task_track_started=True,
        task_soft_time_limit=settings.job_time_limit_s,
        task_time_limit=settings.job_time_limit_s + 60,
        broker_connection_retry_on_startup=True,
        # Redis redelivers an unacknowledged task after the visibility timeout; a worker that is
        # still alive keeps the job because its heartbeat is fresh (see db.repositories.jobs.claim).
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s or settings.job_time_limit_s + 300},
        result_expires=24 * 3600,
        worker_hijack_root_logger=False,
    )
    return app


app = make_celery()
