"""Launch an audit run (create and enqueue its jobs) and finalize it (verdict against the baseline), once each.

Independent of Celery, like worker.runner: the tasks in worker.audits and `advaudit audits demo` call these.
Nothing here waits for a job: launch returns once the jobs are queued, and finalize is called again (by the
evaluate task when a job ends, and by every tick) until all of a run's jobs have finished.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from contracts.tasks import queue_for
from db import repositories as repo
from db.base import utcnow
from db.models import Audit, AuditRun, Job, ModelRecord
from db.session import session_scope
from db.transfer_models import TransferJob
from services.audit_states import ERROR, FINISHED, PENDING, RUNNING, WEBHOOK_PENDING
from services.audit_verdict import Thresholds, Verdict, judge
from services.errors import AdvauditError
from services.job_states import FAILED, QUEUED, TERMINAL
from services.specs import EvaluationConfig
from worker.audit_baseline import baseline_pairs
from worker.audit_transfer import create_transfer, plan_sources, with_transfers
from worker.webhooks import WebhookSettings

log = logging.getLogger(__name__)


class LaunchError(AdvauditError):
    """A run cannot create its jobs (a model or dataset is gone, the stored config no longer validates)."""


@dataclass
class AuditContext:
    """What launching and finalizing need: the database, how to enqueue, and a clock tests can control."""

    sessions: sessionmaker[Session]
    send_job: Callable[[Job], None]  # enqueue the evaluate task for a committed job
    send_webhook: Callable[[int], None]  # enqueue the webhook delivery of a finished run
    # enqueue the transfer task of a committed transfer job (audits with transfer sources)
    send_transfer: Callable[[TransferJob], None] = field(default=lambda job: _no_transfer_queue())
    run_timeout_s: float = 24 * 3600.0
    clock: Callable[[], datetime] = field(default=utcnow)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    # A message expected this long ago and still without effect is presumed lost, and the tick sends it again.
    lost_after_s: float = 300.0


def _no_transfer_queue() -> None:
    raise RuntimeError("this worker was given no way to enqueue transfer jobs")


def _models(session: Session, audit: Audit, run: AuditRun) -> list[ModelRecord]:
    if run.target_model_id is not None:  # a version trigger evaluates exactly the version that was registered
        model = repo.models.get(session=session, model_id=run.target_model_id)
        if model is None:
            raise LaunchError(
                f"model {run.target_model_id}, whose registration triggered this run, no longer exists"
            )
        return [model]
    if audit.model_ids is not None:
        models = []
        for model_id in audit.model_ids:
            model = repo.models.get(session=session, model_id=model_id)
            if model is None:
                raise LaunchError(f"model {model_id} no longer exists; edit the audit's model_ids")
            models.append(model)
        return models
    model = repo.models.get_by_name(session=session, name=audit.model_name)
    if model is None:
        raise LaunchError(f"no model named {audit.model_name!r} is registered")
    return [model]


Plan = tuple[list[ModelRecord], EvaluationConfig, list[ModelRecord]]


def _plan(session: Session, audit: Audit, run: AuditRun) -> Plan:
    """The models to evaluate, the validated config and the transfer sources; LaunchError says why a run
    cannot start."""
    try:
        config = EvaluationConfig(**audit.config)
    except (AdvauditError, TypeError) as error:
        raise LaunchError(f"the audit's evaluation config is invalid: {error}") from None
    dataset = repo.datasets.get(session=session, dataset_id=audit.dataset_id)
    models = _models(session, audit, run)
    for model in models:
        if list(model.input_shape) != list(dataset.input_shape):
            raise LaunchError(
                f"model {model.name} {model.version} takes inputs of shape {tuple(model.input_shape)} "
                f"but dataset {dataset.name} has {tuple(dataset.input_shape)}"
            )
        if dataset.num_classes > model.num_classes:
            raise LaunchError(
                f"dataset {dataset.name} has {dataset.num_classes} classes but model {model.name} "
                f"{model.version} predicts only {model.num_classes}"
            )
    try:
        sources = plan_sources(session, audit, dataset, models)
    except ValueError as error:
        raise LaunchError(str(error)) from None
    return models, config, sources


def launch_run(run_id: int, context: AuditContext) -> str | None:
    """pending → running: create the run's jobs and enqueue them; None when another caller launched it."""
    now = context.clock()
    jobs: list[Job] = []
    transfer: TransferJob | None = None
    with session_scope(context.sessions) as session:
        run = repo.audits.get_run(session=session, run_id=run_id)
        if run is None or run.status != PENDING:
            return None
        # The status change and the jobs commit together: a run is never running without its jobs.
        if not repo.audits.transition_run(
            session=session, run_id=run_id, from_status=PENDING, to_status=RUNNING, started_at=now
        ):
            return None
        try:
            models, config, sources = _plan(session, run.audit, run)
        except LaunchError as error:
            _write_verdict(session, run, Verdict(ERROR, str(error), [], [str(error)]), now)
        else:
            for model in models:
                job = repo.jobs.create(
                    session=session,
                    model_id=model.id,
                    dataset_id=run.audit.dataset_id,
                    config=config.to_dict(),
                    queue=queue_for(config.device),
                )
                repo.audits.create_run_job(session=session, run=run, job=job)
                jobs.append(job)
            if sources:
                transfer = create_transfer(session, run, sources, models, config)
        notify = not jobs and run.audit.webhook_url is not None
    if not jobs:
        if notify:
            _send_webhook(run_id, context)
        return ERROR
    sent = [_send_job(job, context) for job in jobs]
    if transfer is not None:
        sent.append(_send_transfer(transfer, context))
    mark_jobs_sent(run_id, context)
    if not all(sent):
        finalize_run(run_id, context)  # every job may have been refused: judge the run now
    return RUNNING


def mark_jobs_sent(run_id: int, context: AuditContext) -> None:
    """Record that every job of the run went to the broker (or was failed), so no tick sends them again."""
    with session_scope(context.sessions) as session:
        run = repo.audits.get_run(session=session, run_id=run_id)
        if run is not None and run.jobs_sent_at is None:
            repo.audits.update_run(session=session, run=run, jobs_sent_at=context.clock())


def _send_job(job: Job, context: AuditContext) -> bool:
    """Enqueue one committed job; a job the broker refused is failed, so the run can still be judged."""
    try:
        context.send_job(job)
        return True
    except Exception as error:  # broker down or refusing: the job must not sit queued forever
        with session_scope(context.sessions) as session:
            record = repo.jobs.get(session=session, job_id=job.id)
            if record is not None and record.status == QUEUED:
                repo.jobs.transition(
                    session=session,
                    job=record,
                    new_status=FAILED,
                    error=f"broker unavailable: {type(error).__name__}: {error}",
                )
        return False


def _send_transfer(transfer: TransferJob, context: AuditContext) -> bool:
    """Enqueue the run's committed transfer job; one the broker refused is failed, so the run is judged."""
    try:
        context.send_transfer(transfer)
        return True
    except Exception as error:
        with session_scope(context.sessions) as session:
            record = repo.transfers.get(session=session, transfer_id=transfer.id)
            if record is not None and record.status == QUEUED:
                repo.transfers.transition(
                    session=session,
                    transfer_job=record,
                    new_status=FAILED,
                    error=f"broker unavailable: {type(error).__name__}: {error}",
                )
        return False


def _write_verdict(session: Session, run: AuditRun, verdict: Verdict, now: datetime) -> bool:
    """running → finished with the verdict (compare-and-set: written once even if finalized twice)."""
    webhook = WEBHOOK_PENDING if run.audit.webhook_url else None
    return repo.audits.transition_run(
        session=session,
        run_id=run.id,
        from_status=RUNNING,
        to_status=FINISHED,
        verdict=verdict.verdict,
        reason=verdict.reason,
        result={"comparisons": verdict.comparisons, "errors": verdict.errors},
        finished_at=now,
        webhook_status=webhook,
    )


def finalize_run(run_id: int, context: AuditContext) -> str | None:
    """Judge a running run whose jobs have all ended (or that timed out); None while there is nothing to do."""
    now = context.clock()
    with session_scope(context.sessions) as session:
        run = repo.audits.get_run(session=session, run_id=run_id)
        if run is None or run.status != RUNNING:
            return None
        jobs = [
            job for _, job in repo.audits.list_run_jobs(session=session, run_ids=[run_id], with_reports=True)
        ]
        timed_out = run.started_at is not None and now - run.started_at > timedelta(
            seconds=context.run_timeout_s
        )
        transfer = repo.audit_transfers.get(session=session, run_id=run_id)
        waiting = [job.status for job in jobs] + ([transfer.status] if transfer is not None else [])
        if jobs and not timed_out and any(status not in TERMINAL for status in waiting):
            return None
        errors = []
        if not jobs:
            errors.append("the run created no jobs")
        late = [job for job in jobs if job.status not in TERMINAL] if timed_out else []
        if late:
            errors.append(
                f"{len(late)} job(s) had not finished {_duration(context.run_timeout_s)} after the run "
                "started and were cancelled"
            )
        late_transfer = timed_out and transfer is not None and transfer.status not in TERMINAL
        if late_transfer:
            errors.append(
                f"transfer job {transfer.id} had not finished {_duration(context.run_timeout_s)} after the run "
                "started and was cancelled"
            )
        pairs, no_baseline_reason = baseline_pairs(session, run.audit, run, jobs, errors)
        pairs = with_transfers(session, run, pairs)
        verdict = judge(pairs, Thresholds.from_dict(run.thresholds), errors, no_baseline_reason)
        for job in late:  # the verdict is out: their results could no longer change it
            repo.jobs.request_cancel(session=session, job=job)
        if late_transfer and transfer is not None:
            repo.transfers.request_cancel(session=session, transfer_job=transfer)
        if not _write_verdict(session, run, verdict, now):
            return None
        notify = run.audit.webhook_url is not None
    if notify:
        _send_webhook(run_id, context)
    return verdict.verdict


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h" if seconds >= 3600 else f"{seconds / 60:.3g} min"


def _send_webhook(run_id: int, context: AuditContext) -> None:
    try:
        context.send_webhook(run_id)
    except (
        Exception
    ) as error:  # the broker refused: the delivery stays pending and a later tick sends it again
        log.warning("audit run %s: cannot queue the webhook delivery (a tick retries): %s", run_id, error)
