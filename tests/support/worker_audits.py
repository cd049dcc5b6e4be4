"""Audit test helpers: an in-process queue standing in for Celery, demo model versions, audits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from db import repositories as repo
from db.models import Audit, Job
from db.session import session_scope
from db.transfer_models import TransferJob
from services.audit_verdict import Thresholds
from services.checkpoints import demo_model_path
from services.specs import EvaluationConfig
from tests.support.builders import add_model_file
from worker.audit_runs import AuditContext
from worker.runner import WorkerContext, run_job
from worker.transfer_runner import run_transfer_job

MODEL_NAME = "digits-net"
# The demo ε range on all 360 digits, with a short PGD: a few seconds per job on a CPU. PGD-3 leaves a few
# samples robust that targeted PGD-3 moves to their target (1–3 %), so the ordering checks get 5 % slack.
CONFIG = EvaluationConfig(
    eps=(0.0, 2 / 255, 4 / 255, 8 / 255),
    targeted="next",
    steps=3,
    sanity_tolerance=0.05,
    cam="none",
    cam_samples=0,
    triptychs=0,
    device="cpu",
).to_dict()


class InlineQueue:
    """Records what would be enqueued; `run_jobs` then runs the queued jobs in this process, as a worker would."""

    def __init__(self, worker: WorkerContext) -> None:
        self.worker = worker
        self.jobs: list[int] = []
        self.webhooks: list[int] = []
        self.transfers: list[int] = []

    def send_transfer(self, job: TransferJob) -> None:
        self.transfers.append(job.id)

    def run_transfers(self) -> list[str | None]:
        done, self.transfers = self.transfers, []
        return [run_transfer_job(transfer_id, self.worker) for transfer_id in done]

    def send_job(self, job: Job) -> None:
        self.jobs.append(job.id)

    def send_webhook(self, run_id: int) -> None:
        self.webhooks.append(run_id)

    def run_jobs(self) -> list[str | None]:
        done, self.jobs = self.jobs, []
        return [run_job(job_id, self.worker) for job_id in done]


def audit_context(
    worker: WorkerContext, queue: InlineQueue, clock=None, timeout_s: float = 3600.0
) -> AuditContext:
    context = AuditContext(
        sessions=worker.sessions,
        send_job=queue.send_job,
        send_webhook=queue.send_webhook,
        send_transfer=queue.send_transfer,
        run_timeout_s=timeout_s,
    )
    if clock is not None:
        context.clock = clock
    return context


def add_version(session: Session, store, variant: str, name: str = MODEL_NAME) -> int:
    """Register a shipped demo checkpoint (gap-cnn, gap-cnn-fragile, gap-cnn-retrained) as a version of `name`."""
    return add_model_file(session, store, demo_model_path(variant), name).id


def add_audit(
    session: Session,
    dataset_id: int,
    *,
    name: str = "nightly",
    schedule_from: datetime | None = None,
    **fields,
) -> Audit:
    values = dict(
        name=name,
        dataset_id=dataset_id,
        config=CONFIG,
        thresholds=Thresholds().to_dict(),
        model_name=MODEL_NAME,
    )
    audit = repo.audits.create(session=session, **(values | fields))
    if schedule_from is not None:
        repo.audits.update(session=session, audit=audit, schedule_from=schedule_from)
    return audit


def manual_run(sessions, audit_id: int, slot: str = "manual:test", trigger: str = "manual", **fields) -> int:
    """Record a pending run of the audit (as "run now" or a version trigger does); its id."""
    with session_scope(sessions) as session:
        audit = repo.audits.get(session=session, audit_id=audit_id)
        return repo.audits.create_run(session=session, audit=audit, slot=slot, trigger=trigger, **fields).id


def run_state(sessions, run_id: int):
    with session_scope(sessions) as session:
        return repo.audits.get_run(session=session, run_id=run_id)


def regressed_metrics(run) -> set[tuple[str, int | None]]:
    """{(metric, ε·255)} of the run's regressed rows."""
    return {
        (row["metric"], None if row["eps"] is None else round(row["eps"] * 255))
        for entry in run.result["comparisons"]
        for row in entry["rows"]
        if row["regressed"]
    }
