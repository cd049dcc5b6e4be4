"""Run one evaluation job: claim it, evaluate through services, write every result in one transaction.

Independent of Celery so it can be tested and embedded; worker/tasks.py is the thin Celery wrapper.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db import repositories as repo
from db.base import utcnow
from db.errors import StaleJob
from db.models import DatasetRecord, Job, ModelRecord
from db.session import session_scope
from db.storage import ArtifactStore
from services.checkpoints import LoadedModel, load_model
from services.datasets import load_dataset
from services.errors import AdvauditError, EvaluationCancelled
from services.evaluation import evaluate, resolve_device
from services.job_states import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, InvalidTransition
from services.specs import EvaluationConfig

log = logging.getLogger(__name__)

DATASET_SUFFIX = {"npz": ".npz", "imagefolder-zip": ".zip"}
ARTIFACT_KINDS = {".json": "report", ".npz": "arrays", ".png": "figure"}
MAX_HEARTBEAT_INTERVAL_S = 30.0


class JobLeased(Exception):  # not an error: the task asks again later
    """The job is running elsewhere under a live lease; ask again after `retry_after_s`.

    A redelivered task must not just drop its message here: if that other worker dies later, the
    redelivered message may be the only one left that can finish the job.
    """

    def __init__(self, job_id: int, retry_after_s: float) -> None:
        super().__init__(f"job {job_id} is running under a live lease; retry in {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


@dataclass
class WorkerContext:
    """What a worker process needs: where rows and files live, which device, how often to report."""

    sessions: sessionmaker[Session]
    store: ArtifactStore
    device: str = "auto"
    progress_interval_s: float = 0.5
    lease_s: float | None = 120.0
    # A factory, not a default evaluated at import: prefork children would all carry the parent's pid.
    host: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


class ModelCache:
    """Loaded models per process, keyed by checkpoint sha256 and load options (a few, least recently used)."""

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, load) -> LoadedModel:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        loaded = load()
        with self._lock:
            self._items[key] = loaded
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return loaded


MODELS = ModelCache()


def _load_model(record: ModelRecord, context: WorkerContext, device: str) -> LoadedModel:
    path = context.store.path(record.storage_key)
    if path is None:
        raise AdvauditError(f"the checkpoint of model {record.name} {record.version} is missing from the store")
    key = (record.sha256, record.arch, record.num_classes, tuple(record.input_shape),
           tuple(record.mean or ()), tuple(record.std or ()), device)
    return MODELS.get(key, lambda: load_model(
        path, input_shape=tuple(record.input_shape), arch=record.arch,
        num_classes=record.num_classes if record.arch else None, mean=record.mean, std=record.std,
        device=device))


def _open_dataset(record: DatasetRecord, context: WorkerContext, workdir: Path):
    if record.storage_key is None:
        return load_dataset(record.source)
    path = context.store.path(record.storage_key)
    if path is None:
        raise AdvauditError(f"the file of dataset {record.name} is missing from the store")
    # Stored files are named by hash; the loaders read the format from the suffix.
    link = workdir / f"dataset{DATASET_SUFFIX.get(record.format, '')}"
    link.symlink_to(path)
    image_size = record.input_shape[-1] if record.format.startswith("imagefolder") else None
    return load_dataset(link, image_size=image_size)


class _Progress:
    """Throttled progress writes (each one a heartbeat); remembers whether the job should stop."""

    def __init__(self, context: WorkerContext, job_id: int, attempt: int) -> None:
        self.context, self.job_id, self.attempt = context, job_id, attempt
        self.stop = False  # cancelled, or taken over by a newer attempt
        self.fraction = 0.0
        self._last = 0.0
        self._lock = threading.Lock()  # the heartbeat thread writes too: keep progress monotonic

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != "sweep":
            return
        # The sweep is most of the work; the last 5 % cover the CAM audit and the result write.
        self.fraction = 0.95 * done / max(total, 1)
        if time.monotonic() - self._last >= self.context.progress_interval_s or done >= total:
            self.beat()

    def beat(self) -> None:
        """Write the current progress and a heartbeat; learn whether the job should stop."""
        with self._lock:
            self._last = time.monotonic()
            with session_scope(self.context.sessions) as session:
                lost = repo.jobs.report_progress(session=session, job_id=self.job_id, progress=self.fraction,
                                                 attempt=self.attempt)
            self.stop = self.stop or lost


@contextmanager
def _heartbeat(progress: _Progress, lease_s: float | None) -> Iterator[None]:
    """Keep the claim's lease fresh from a thread while the job runs.

    Progress callbacks come only between sweep batches; model loading, one long batch, the CAM audit or
    the artifact rendering can each outlast the lease, and a redelivered task would then take over a job
    whose worker is alive and busy.
    """
    if not lease_s:
        yield
        return
    every_s, done = min(lease_s / 4, MAX_HEARTBEAT_INTERVAL_S), threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            try:
                progress.beat()
            except Exception:  # a database hiccup must not kill the job; the next beat tries again
                log.warning("job %s: heartbeat failed", progress.job_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"advaudit-heartbeat-{progress.job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _finish(context: WorkerContext, job_id: int, attempt: int, status: str, **fields) -> str | None:
    """Mark the job `status` (the status, or None when this attempt no longer owns the job)."""
    try:
        with session_scope(context.sessions) as session:
            job = repo.jobs.get(session=session, job_id=job_id)
            repo.jobs.transition(session=session, job=job, new_status=status, attempt=attempt, **fields)
        return status
    except (StaleJob, InvalidTransition) as error:  # taken over or cancelled meanwhile: that run decides
        log.info("job %s: not marking %s: %s", job_id, status, error)
        return None


def _store_results(context: WorkerContext, job_id: int, attempt: int, report, workdir: Path) -> None:
    out = workdir / "report"
    report.write(out)
    record_results(context, job_id, attempt, report.to_dict(), out)


def record_results(context: WorkerContext, job_id: int, attempt: int, document: dict, report_dir: Path) -> None:
    """Store a report folder's files and mark the job succeeded with its results, in one transaction."""
    stored = [(path.name, *context.store.put_file(path)) for path in sorted(report_dir.iterdir()) if path.is_file()]
    with session_scope(context.sessions) as session:
        job = repo.jobs.get(session=session, job_id=job_id)
        # The fenced status change comes first: it raises before a stale attempt touches any result row,
        # and on PostgreSQL its row lock makes a concurrent attempt's write wait for this one's outcome.
        repo.jobs.transition(session=session, job=job, new_status=SUCCEEDED, attempt=attempt, report=document)
        repo.results.replace_results(session=session, job=job, report_document=document)
        for name, key, sha256, size in stored:
            repo.results.put_artifact(session=session, job=job, name=name,
                                      kind=ARTIFACT_KINDS.get(Path(name).suffix, "file"),
                                      storage_key=key, sha256=sha256, size_bytes=size)


def _leased(job: Job | None, lease_s: float | None) -> float | None:
    """Seconds until the live lease on a running `job` expires, or None when no one holds the job."""
    if job is None or job.status != RUNNING or not lease_s or job.heartbeat_at is None:
        return None
    return max(lease_s - (utcnow() - job.heartbeat_at) / timedelta(seconds=1), 0.0) + 1.0


def run_job(job_id: int, context: WorkerContext) -> str | None:
    """Claim and run job `job_id`; returns its final status, or None when it was not ours to run.

    Raises JobLeased when another worker holds the job under a live lease (the caller retries later).
    """
    with session_scope(context.sessions) as session:
        job: Job | None = repo.jobs.claim(session=session, job_id=job_id, worker_host=context.host,
                                             lease_s=context.lease_s)
        if job is None:
            retry_after = _leased(repo.jobs.get(session=session, job_id=job_id), context.lease_s)
            if retry_after is not None:
                raise JobLeased(job_id, retry_after)
            return None
        attempt, model_record, dataset_record = job.attempts, job.model, job.dataset
        config_data = dict(job.config)
        session.expunge_all()
    progress = _Progress(context, job_id, attempt)
    try:
        config = EvaluationConfig(**config_data)
        if config.device == "auto" and context.device != "auto":
            config = replace(config, device=context.device)  # the worker's device, unless the job names one
        device = str(resolve_device(config.device))  # the loaders take a concrete device, never "auto"
        with _heartbeat(progress, context.lease_s), \
                tempfile.TemporaryDirectory(prefix=f"advaudit-job-{job_id}-") as tmp:
            workdir = Path(tmp)
            loaded = _load_model(model_record, context, device)
            dataset = _open_dataset(dataset_record, context, workdir)
            report = evaluate(loaded, dataset, config, progress=progress, should_stop=lambda: progress.stop)
            # The files were opened from the store by hash; the report names what the user registered.
            report.model = replace(report.model, source=f"{model_record.name}:{model_record.version}")
            report.dataset = replace(report.dataset, source=dataset_record.name)
            _store_results(context, job_id, attempt, report, workdir)
        return SUCCEEDED
    except EvaluationCancelled:
        return _finish(context, job_id, attempt, CANCELLED)
    except (StaleJob, InvalidTransition) as error:
        log.info("job %s attempt %s lost: %s", job_id, attempt, error)
        return None
    except AdvauditError as error:
        return _finish(context, job_id, attempt, FAILED, error=str(error))
    except Exception as error:  # a model's own code can raise anything: the job fails with its message
        log.exception("job %s failed", job_id)
        return _finish(context, job_id, attempt, FAILED, error=f"{type(error).__name__}: {error}")


def requeue_abandoned(context: WorkerContext, send: Callable[[int, str | None], None]) -> list[int]:
    """Queue again the running jobs whose heartbeat is older than the lease (their worker died); their ids.

    Redis hands an unacknowledged task back by itself after the visibility timeout; the embedded SQLite
    broker never does, so without this sweep a job whose worker was killed would stay "running" forever.
    A duplicate message is harmless: only one claim of each attempt wins.
    """
    if not context.lease_s:
        return []
    cutoff = utcnow() - timedelta(seconds=context.lease_s)
    requeued: list[tuple[int, str | None]] = []
    with session_scope(context.sessions) as session:
        for job in repo.jobs.list_abandoned(session=session, heartbeat_before=cutoff):
            try:  # fenced by the attempt it was seen with: a worker that just came back keeps its job
                repo.jobs.transition(session=session, job=job, new_status=QUEUED, attempt=job.attempts,
                                     worker_host=None)
            except (StaleJob, InvalidTransition):
                continue
            requeued.append((job.id, job.queue))
    for job_id, queue in requeued:  # after the commit: a worker must find the row queued
        log.warning("job %s: its worker stopped sending heartbeats; queued again", job_id)
        send(job_id, queue)
    return [job_id for job_id, _ in requeued]
