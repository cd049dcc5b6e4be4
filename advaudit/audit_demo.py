"""`advaudit audits demo`: an audit catching a less robust new model version, in-process on the local data dir.

It goes through the service's own code paths: the audit is validated like POST /audits, the new version
triggers the audit like POST /models does, the worker's launch and finalize steps start and judge the demo
audit's own runs (by id: other audits in the same data directory, their runs and webhooks are left alone),
and the jobs run through the worker's runner. Everything is recorded, so a later `advaudit serve` shows the
audit and its runs.
"""

from __future__ import annotations

import socket

from advaudit.console import console, print_run
from advaudit.service import _use_data_dir
from api.audit_schemas import AuditCreate
from api.services.audit_runs import read_run, record_new_version
from api.services.audits import create_audit
from api.services.datasets import ensure_builtin_datasets
from contracts.settings import get_settings
from db import migrate
from db import repositories as repo
from db.models import ModelRecord
from db.session import make_engine, make_session_factory, session_scope
from db.storage import ArtifactStore, open_store
from services.audit_schedule import manual_slot_key
from services.audit_states import MANUAL
from services.checkpoints import demo_model_path
from worker.audit_runs import AuditContext, finalize_run, launch_run
from worker.runner import WorkerContext, run_job

MODEL_NAME = "digits-cnn"
AUDIT_NAME = "digits-cnn robustness (demo)"
STABLE, FRAGILE = "gap-cnn", "gap-cnn-fragile"
# A short PGD keeps the demo quick; it leaves 1–2 % of the samples that targeted PGD moves to their target, so
# the ordering checks get 5 % slack instead of 1 %.
CONFIG = {
    "eps": ["0", "2/255", "4/255", "8/255"],
    "targeted": "next",
    "steps": 5,
    "sanity_tolerance": 0.05,
    "cam": "none",
    "features": "none",
    "triptychs": 0,
}


class DemoQueue:
    """Stands in for the broker: launch enqueues here, and `drain` runs the jobs through the worker's runner."""

    def __init__(self, worker: WorkerContext) -> None:
        self.worker, self.jobs = worker, []

    def send_job(self, job) -> None:
        self.jobs.append(job.id)

    def send_webhook(self, run_id: int) -> None:  # the demo audit has no webhook
        pass

    def drain(self) -> None:
        jobs, self.jobs = self.jobs, []
        for job_id in jobs:
            with session_scope(self.worker.sessions) as session:
                model = repo.jobs.get(session=session, job_id=job_id).model
                label = f"{model.name} {model.version}"
            with console.status(f"evaluating {label} (job {job_id}) …"):
                status = run_job(job_id, self.worker)
            console.print(f"  job {job_id} ({label}): {status}")


def _register(
    session, store: ArtifactStore, variant: str, audit_id: int | None = None
) -> tuple[ModelRecord, int | None]:
    """A new version of MODEL_NAME holding the shipped checkpoint `variant`, as POST /models registers it, and
    the id of the run it triggered for audit `audit_id` (the runs of other audits stay for the service's tick)."""
    key, sha256, size = store.put_file(demo_model_path(variant))
    digits = repo.datasets.get_by_name(session=session, name="digits")
    model = repo.models.create(
        session=session,
        name=MODEL_NAME,
        sha256=sha256,
        format="torchscript",
        num_classes=10,
        input_shape=list(digits.input_shape),
        storage_key=key,
        size_bytes=size,
        class_names=digits.class_names,
    )
    runs = record_new_version(session=session, model=model)
    return model, next((run.id for run in runs if run.audit_id == audit_id), None)


def _finish(run_id: int, context: AuditContext, queue: DemoQueue) -> None:
    """Launch the demo's run `run_id`, run its jobs, judge it (no other run is touched)."""
    launch_run(run_id, context)
    queue.drain()
    finalize_run(run_id, context)


def _show(sessions, run_id: int) -> dict:
    with session_scope(sessions) as session:
        run = repo.audits.get_run(session=session, run_id=run_id)
        document = read_run(session=session, run=run)
    print_run(document)
    return document


def run_demo(*, data_dir: str | None, device: str) -> int:
    """Register v1, audit it (baseline), register a fragile v2 (triggers the audit): prints the verdicts."""
    _use_data_dir(data_dir)
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    sessions = make_session_factory(make_engine(settings.database_url))
    ensure_builtin_datasets(sessions)
    store = open_store(settings)
    worker = WorkerContext.from_settings(
        settings,
        sessions,
        store,
        host=f"{socket.gethostname()}:audit-demo",
        device=device if device != "auto" else settings.device,
    )
    queue = DemoQueue(worker)
    context = AuditContext(sessions=sessions, send_job=queue.send_job, send_webhook=queue.send_webhook)

    with session_scope(sessions) as session:
        old = repo.audits.get_by_name(session=session, name=AUDIT_NAME)
        if old is not None:  # a demo run before: start its audit afresh (its jobs stay)
            repo.audits.delete(session=session, audit=old)
        stable, _ = _register(session, store, STABLE)
        digits = repo.datasets.get_by_name(session=session, name="digits")
        body = AuditCreate(
            name=AUDIT_NAME,
            model_name=MODEL_NAME,
            dataset_id=digits.id,
            config=CONFIG,
            cron="0 3 * * *",
            timezone="UTC",
            run_on_new_version=True,
        )
        audit = create_audit(session=session, store=store, settings=settings, body=body)
        first = repo.audits.create_run(
            session=session, audit=audit, slot=manual_slot_key("demo-baseline"), trigger=MANUAL
        )
        audit_id, first_id = audit.id, first.id
    console.print(
        f"audit {audit_id} [bold]{AUDIT_NAME}[/]: the newest {MODEL_NAME} on digits, daily at 03:00 UTC "
        f"and on every new version\n{MODEL_NAME} {stable.version}: the shipped gap-cnn; first run:"
    )
    _finish(first_id, context, queue)
    _show(sessions, first_id)

    with session_scope(sessions) as session:
        fragile, version_run_id = _register(session, store, FRAGILE, audit_id)
    console.print(
        f"\nregistered {MODEL_NAME} {fragile.version}: retrained without augmentation for longer "
        "(a little more accurate, far less robust); the new version triggers the audit:"
    )
    _finish(version_run_id, context, queue)
    document = _show(sessions, version_run_id)
    console.print(
        f"\nrecorded in {settings.data_dir}: `advaudit serve`, then GET /api/v1/audits/{audit_id}/runs "
        f"(or `advaudit audits show {audit_id}`)"
    )
    return 0 if document["verdict"] == "regressed" else 1
