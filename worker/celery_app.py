"""The Celery application, configured from settings (ADVAUDIT_* environment variables)."""

from __future__ import annotations

from celery import Celery

from db.settings import Settings, get_settings

EVALUATE_TASK = "advaudit.evaluate"
DEFAULT_QUEUE = "evaluations"
GPU_QUEUE = "gpu"
REDIS_SCHEMES = ("redis", "rediss", "sentinel")


def broker_transport_options(settings: Settings) -> dict:
    """Redelivery settings for a Redis broker; none for the others."""
    # Not for the embedded SQLite broker: kombu's SQLAlchemy transport hands every transport option to
    # create_engine, which rejects unknown ones, so no task could be sent or received.
    if settings.broker_url.split(":", 1)[0] not in REDIS_SCHEMES:
        return {}
    # Redis redelivers an unacknowledged task after the visibility timeout; a worker that is still alive
    # keeps the job because its heartbeat is fresh (db.repositories.jobs.claim) and the redelivered task
    # retries later instead of being dropped (worker.tasks). It must exceed the job lease.
    visibility = settings.visibility_timeout_s
    return {
        "visibility_timeout": visibility,
        # kombu looks for overdue messages every interval × throttle seconds (10 × 10 by default): with a
        # short visibility timeout that scan period, not the timeout, would decide how late a job recovers.
        "unacked_restore_interval": max(1, min(10, visibility // 4)),
        "unacked_restore_throttle": 1,
    }


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
        broker_transport_options=broker_transport_options(settings),
        result_expires=24 * 3600,
        worker_hijack_root_logger=False,
    )
    return app


app = make_celery()
