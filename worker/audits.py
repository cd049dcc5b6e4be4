"""Celery tasks of regression audits: tick (beat), launch, finalize and webhook; thin wrappers by id."""

from __future__ import annotations

import logging
from functools import lru_cache

from sqlalchemy.orm import Session, sessionmaker

from contracts.settings import get_settings
from contracts.tasks import Queue, Task
from db import repositories as repo
from db.models import Job
from db.session import make_engine, make_session_factory, session_scope
from db.transfer_models import TransferJob
from services.audit_states import RUNNING
from services.job_states import TERMINAL
from worker.audit_runs import AuditContext, finalize_run, launch_run
from worker.audit_tick import tick as run_tick
from worker.celery_app import app
from worker.webhooks import WebhookSettings, attempt_delivery

log = logging.getLogger(__name__)


def _send_job(job: Job) -> None:
    app.send_task(Task.EVALUATE, args=[job.id], queue=job.queue or Queue.EVALUATIONS)


def _send_transfer(job: TransferJob) -> None:
    app.send_task(Task.TRANSFER, args=[job.id], queue=job.queue or Queue.EVALUATIONS)


def _send_webhook(run_id: int) -> None:
    deliver_webhook.apply_async(args=[run_id], queue=Queue.CONTROL)


@lru_cache(maxsize=1)
def audit_context() -> AuditContext:
    """One engine and session factory per worker process, and the real task senders."""
    settings = get_settings()
    sessions = make_session_factory(make_engine(settings.database_url))
    return AuditContext(
        sessions=sessions,
        send_job=_send_job,
        send_webhook=_send_webhook,
        send_transfer=_send_transfer,
        run_timeout_s=settings.audit_run_timeout_s,
        webhook=webhook_settings(),
    )


def webhook_settings() -> WebhookSettings:
    return WebhookSettings.from_settings(get_settings())


@app.task(name=Task.AUDIT_TICK, ignore_result=True)
def tick() -> dict:
    """Finalize finished runs, record due scheduled runs, launch pending ones, re-send lost messages."""
    report = run_tick(audit_context())
    if any(vars(report).values()):
        log.info("audit tick: %s", ", ".join(f"{name} {ids}" for name, ids in vars(report).items() if ids))
    return vars(report)


@app.task(name=Task.AUDIT_LAUNCH, ignore_result=True)
def launch(run_id: int) -> str | None:
    """Create and enqueue the jobs of pending run `run_id` (no-op if the tick launched it first)."""
    return launch_run(int(run_id), audit_context())


@app.task(name=Task.AUDIT_FINALIZE, ignore_result=True)
def finalize(run_id: int) -> str | None:
    """Write the verdict of run `run_id` once all its jobs ended (no-op before, and after the first time)."""
    return finalize_run(int(run_id), audit_context())


# max_retries=None: the attempt count is kept on the run and capped by settings.webhook_max_attempts.
@app.task(name=Task.AUDIT_WEBHOOK, bind=True, ignore_result=True, max_retries=None)
def deliver_webhook(self, run_id: int) -> str | None:
    """POST run `run_id`'s summary; retried with exponential backoff, then recorded as failed."""
    attempt = attempt_delivery(int(run_id), audit_context().sessions, webhook_settings())
    if attempt.retry_in_s is not None:
        raise self.retry(countdown=attempt.retry_in_s)
    return attempt.status


def job_ended(job_id: int, sessions: sessionmaker[Session] | None = None) -> None:
    """Called by the evaluate task when job `job_id` stops: finalize its audit run once all its jobs ended."""
    try:
        with session_scope(sessions or audit_context().sessions) as session:
            run = repo.audits.get_run_for_job(session=session, job_id=job_id)
            if run is None or run.status != RUNNING:
                return
            jobs = repo.audits.list_run_jobs(session=session, run_ids=[run.id])
            if any(job.status not in TERMINAL for _, job in jobs):
                return
            run_id = run.id
        finalize.apply_async(args=[run_id], queue=Queue.CONTROL)
    except Exception:  # never fail the evaluation for its audit; the next tick finalizes the run instead
        log.warning("job %s: could not hand its audit run over for finalizing", job_id, exc_info=True)


def transfer_ended(transfer_id: int, sessions: sessionmaker[Session] | None = None) -> None:
    """Called by the transfer task when its job stops: hand the audit run that launched it to finalize."""
    try:
        with session_scope(sessions or audit_context().sessions) as session:
            run_id = repo.audit_transfers.run_id_for(session=session, transfer_id=transfer_id)
            transfer = repo.transfers.get(session=session, transfer_id=transfer_id)
            if run_id is None or transfer is None or transfer.status not in TERMINAL:
                return
        finalize.apply_async(args=[run_id], queue=Queue.CONTROL)  # finalize waits for the jobs still running
    except Exception:  # never fail the transfer job for its audit; the next tick finalizes the run instead
        log.warning("transfer job %s: could not hand its audit run over", transfer_id, exc_info=True)
