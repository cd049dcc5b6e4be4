"""The Celery application, configured from settings (ADVAUDIT_* environment variables)."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_init

from contracts import embedded_broker
from contracts.settings import Settings, get_settings
from contracts.tasks import CONTROL_TASKS, Queue, Task

REDIS_SCHEMES = ("redis", "rediss", "sentinel")


def broker_transport_options(settings: Settings) -> dict:
    """Redelivery settings for a Redis broker, lock waits for the embedded SQLite one; none for the others."""
    # Not for the embedded SQLite broker: kombu's SQLAlchemy transport hands every transport option to
    # create_engine, which rejects unknown ones, so no task could be sent or received.
    if embedded_broker.is_embedded(settings.broker_url):
        return embedded_broker.transport_options()
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


def beat_schedule(settings: Settings) -> dict:
    """Periodic tasks that read the database: the audit tick, and the sweep that requeues a dead worker's jobs."""
    # A tick that waited longer than one period is dropped: the next one does the same work.
    every_s = max(settings.job_lease_s / 2, 1.0)  # a dead worker's job waits at most 1.5 leases
    return {
        "audit-tick": {
            "task": Task.AUDIT_TICK,
            "schedule": settings.audit_tick_s,
            "options": {"queue": Queue.CONTROL, "expires": settings.audit_tick_s},
        },
        "requeue-abandoned-jobs": {
            "task": Task.REQUEUE_ABANDONED,
            "schedule": every_s,
            "options": {"queue": Queue.CONTROL, "expires": every_s},
        },
    }


def make_celery() -> Celery:
    """A Celery app whose tasks survive worker loss: late acks, redelivery on a lost worker, prefetch 1."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery(
        "advaudit",
        broker=settings.broker_url,
        backend=settings.result_backend,
        include=["worker.tasks", "worker.audits"],
    )
    app.conf.update(
        task_acks_late=True,  # a task is acknowledged only after it finished …
        task_reject_on_worker_lost=True,  # … and requeued when its worker process dies mid-run
        worker_prefetch_multiplier=1,  # one job at a time per process: evaluations are long
        task_default_queue=Queue.EVALUATIONS,
        task_routes={
            str(name): {"queue": Queue.CONTROL} for name in CONTROL_TASKS
        },  # also when sent without a queue
        task_track_started=True,
        # The job's own watchdog stops it at the limit (and kills it one grace later); this hard limit is the
        # backstop for a process that cannot even run its watchdog thread.
        task_time_limit=settings.job_time_limit_s + 2 * settings.job_kill_grace_s,
        # A pool child that died is reported after this wait (10 s by default, for a result it might still have
        # published); ours write their results to the database, so the job is settled and requeued at once.
        worker_lost_wait=1.0,
        broker_connection_retry_on_startup=True,
        broker_transport_options=broker_transport_options(settings),
        result_expires=24 * 3600,
        worker_hijack_root_logger=False,
        beat_schedule=beat_schedule(settings),
    )
    return app


app = make_celery()


@worker_init.connect
def _preload(**_kwargs) -> None:
    """Import the slow, lazily imported parts before the first job, so it does not pay for them."""
    from services.datasets import warm_up  # noqa: PLC0415 (only a worker process needs it)

    warm_up()
