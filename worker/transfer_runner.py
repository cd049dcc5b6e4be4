"""Run one transfer job: claim it, compute the matrix through services, write its points in one transaction.

It reuses the evaluation jobs' machinery: the claim discipline (attempt-fenced, leases, max attempts), the
progress and heartbeat loop with its watchdog (JobControl, writing to the transfer job's row), the model
cache and the dataset loading. A redelivered task finds the job done or taken; its points are replaced,
never duplicated.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from db import repositories as repo
from db.base import utcnow
from db.errors import StaleJob
from db.models import DatasetRecord, ModelRecord
from db.session import session_scope
from services.errors import EvaluationCancelled
from services.evaluation_setup import resolve_device
from services.job_states import CANCELLED, FAILED, QUEUED, SUCCEEDED, InvalidTransition
from services.transfer import run_transfer
from services.transfer_specs import ModelShape, TransferConfig, check_compatible
from worker import scratch
from worker.job_control import JobControl, StopReason, time_limit_message, watched
from worker.messages import public_message
from worker.runner import JobLeased, WorkerContext, _leased, _load_model, _open_dataset

log = logging.getLogger(__name__)


class TransferControl(JobControl):
    """JobControl whose heartbeat and progress go to the transfer job's row."""

    def _report(self, session):
        return repo.transfers.report_progress(
            session=session, transfer_id=self.job_id, progress=self.fraction, attempt=self.attempt
        )

    def end_by_force(self) -> bool:
        if self.reason is StopReason.LOST:
            return True
        status = CANCELLED if self.reason is StopReason.CANCELLED else FAILED
        error = None if status == CANCELLED else time_limit_message(self.context.time_limit_s)
        return _finish(self.context, self.job_id, self.attempt, status, error=error) is not None


def _finish(context: WorkerContext, transfer_id: int, attempt: int, status: str, **fields) -> str | None:
    try:
        with session_scope(context.sessions) as session:
            job = repo.transfers.get(session=session, transfer_id=transfer_id)
            repo.transfers.transition(
                session=session, transfer_job=job, new_status=status, attempt=attempt, **fields
            )
        return status
    except (StaleJob, InvalidTransition) as error:
        log.info("transfer job %s: not marking %s: %s", transfer_id, status, error)
        return None


def _label(record: ModelRecord) -> str:
    return f"{record.name} {record.version}"


def _compute(context, control, config, dataset_record, sources, targets, workdir) -> list[dict]:
    """The matrix's points as rows of transfer_points (models named by id)."""
    records = {record.id: record for record in (*sources, *targets)}
    check_compatible(
        [ModelShape(_label(r), tuple(r.input_shape), r.num_classes) for r in records.values()],
        dataset_record.name,
        tuple(dataset_record.input_shape),
        dataset_record.num_classes,
    )
    device = resolve_device(
        context.device if config.device == "auto" and context.device != "auto" else config.device
    )
    loaded = {i: _load_model(record, context, str(device)) for i, record in records.items()}
    dataset = _open_dataset(dataset_record, context, workdir)
    n = min(len(dataset), config.limit) if config.limit else len(dataset)
    result = run_transfer(
        {str(r.id): loaded[r.id].module for r in sources},
        {str(r.id): loaded[r.id].module for r in targets},
        dataset.batches(config.batch_size, limit=n),
        num_samples=n,
        eps=config.eps,
        attacks=config.attacks,
        pgd=config.pgd,
        pgd_examples=config.pgd_examples,
        device=device,
        precision=config.precision,
        seed=config.seed,
        progress=lambda done, total: control.progress("sweep", done, total),
        should_stop=control.should_stop,
    )
    return [
        {
            "source_model_id": None if p.source is None else int(p.source),
            "target_model_id": int(p.target),
            "attack": p.attack,
            "eps": p.eps,
            "accuracy": p.accuracy,
            "success_rate": p.success_rate,
            "n": p.n,
        }
        for p in result.points()
    ]


def run_transfer_job(transfer_id: int, context: WorkerContext) -> str | None:
    """Claim and run transfer job `transfer_id`; its final status, or None when it was not ours to run.

    Raises JobLeased when another worker holds it under a live lease (the caller retries later).
    """
    with session_scope(context.sessions) as session:
        job = repo.transfers.claim(
            session=session,
            transfer_id=transfer_id,
            worker_host=context.host,
            lease_s=context.lease_s,
            max_attempts=context.max_attempts,
        )
        if job is None:
            retry_after = _leased(
                repo.transfers.get(session=session, transfer_id=transfer_id), context.lease_s
            )
            if retry_after is not None:
                raise JobLeased(transfer_id, retry_after)
            return None
        attempt, config_data = job.attempts, dict(job.config)
        dataset_record: DatasetRecord = repo.datasets.get(session=session, dataset_id=job.dataset_id)
        by_id = {
            m.id: m
            for m in (
                repo.models.get(session=session, model_id=i) for i in {link.model_id for link in job.models}
            )
        }
        sources = [by_id[i] for i in job.model_ids("source")]
        targets = [by_id[i] for i in job.model_ids("target")]
        session.expunge_all()
    control = TransferControl(context, transfer_id, attempt)
    workdir = Path(tempfile.mkdtemp(prefix=f"transfer-{transfer_id}-{attempt}-", dir=_scratch(context)))
    try:
        with watched(control, context.kill):
            points = _compute(
                context, control, TransferConfig(**config_data), dataset_record, sources, targets, workdir
            )
            with session_scope(context.sessions) as session:
                job = repo.transfers.get(session=session, transfer_id=transfer_id)
                # The fenced status change first: a stale attempt raises before touching any point.
                repo.transfers.transition(
                    session=session, transfer_job=job, new_status=SUCCEEDED, attempt=attempt
                )
                repo.transfers.replace_points(session=session, transfer_job=job, points=points)
        return SUCCEEDED
    except EvaluationCancelled:
        if control.reason is StopReason.TIME_LIMIT:
            return _finish(
                context, transfer_id, attempt, FAILED, error=time_limit_message(context.time_limit_s)
            )
        if control.reason is StopReason.LOST:
            return None
        return _finish(context, transfer_id, attempt, CANCELLED)
    except (StaleJob, InvalidTransition) as error:
        log.info("transfer job %s attempt %s lost: %s", transfer_id, attempt, error)
        return None
    except Exception as error:  # a model's own code can raise anything: the job fails with its message
        log.exception("transfer job %s failed", transfer_id)
        return _finish(context, transfer_id, attempt, FAILED, error=public_message(error))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _scratch(context: WorkerContext) -> Path:
    # Not scratch.job_folder: its folders are judged stale against the jobs table, not this one.
    root = context.scratch_root or scratch.DEFAULT_ROOT
    root.mkdir(parents=True, exist_ok=True)
    return root


def requeue_abandoned_transfers(context: WorkerContext, send: Callable[[int, str | None], None]) -> list[int]:
    """Queue again the running transfer jobs whose heartbeat is older than the lease (as for jobs)."""
    if not context.lease_s:
        return []
    cutoff = utcnow() - timedelta(seconds=context.lease_s)
    requeued: list[tuple[int, str | None]] = []
    with session_scope(context.sessions) as session:
        for job in repo.transfers.list_abandoned(session=session, heartbeat_before=cutoff):
            exhausted = repo.jobs.attempts_exhausted(
                job.attempts, context.max_attempts, repo.jobs.SILENT_WORKER
            )
            status = FAILED if exhausted else QUEUED
            try:
                repo.transfers.transition(
                    session=session,
                    transfer_job=job,
                    new_status=status,
                    attempt=job.attempts,
                    lost_reason=repo.jobs.SILENT_WORKER,
                    error=exhausted,
                    **({} if exhausted else {"worker_host": None}),
                )
            except (StaleJob, InvalidTransition):
                continue
            if not exhausted:
                requeued.append((job.id, job.queue))
    for transfer_id, queue in requeued:
        log.warning("transfer job %s: its worker stopped sending heartbeats; queued again", transfer_id)
        send(transfer_id, queue)
    return [transfer_id for transfer_id, _ in requeued]
