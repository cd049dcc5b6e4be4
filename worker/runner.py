"""Run one evaluation job: claim it, evaluate through services, write every result in one transaction.

Independent of Celery so it can be tested and embedded; worker/tasks.py is the thin Celery wrapper.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from contracts.settings import Settings
from db import repositories as repo
from db.base import utcnow
from db.errors import StaleJob
from db.models import DatasetRecord, Job, ModelRecord
from db.session import session_scope
from db.storage import ArtifactStore
from services.checkpoints import LoadedModel, load_model
from services.datasets import Dataset, load_dataset
from services.errors import DatasetError, EvaluationCancelled, ModelError
from services.evaluation import evaluate, resolve_device
from services.job_states import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, InvalidTransition
from services.report import Report
from services.sharding import planned_ranges
from services.specs import EvaluationConfig
from worker import scratch
from worker.job_control import JobControl, StopReason, kill_this_process, time_limit_message, watched
from worker.messages import public_message

log = logging.getLogger(__name__)

DATASET_SUFFIX = {"npz": ".npz", "imagefolder-zip": ".zip"}
ARTIFACT_KINDS = {".json": "report", ".npz": "arrays", ".png": "figure"}


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
    """What a worker process needs: where rows and files live, which device, how often to report, its limits."""

    sessions: sessionmaker[Session]
    store: ArtifactStore
    device: str = "auto"
    progress_interval_s: float = 0.5
    lease_s: float | None = 120.0
    heartbeat_interval_s: float = 1.0
    time_limit_s: float | None = None  # a job stops at its next check after this long …
    kill_grace_s: float = 10.0  # … and is killed when it has not stopped this much later
    max_attempts: int | None = None  # runs of one job lost with their worker before it fails
    scratch_root: Path | None = None  # None: a folder in the system's temp directory (in-process use)
    # A factory, not a default evaluated at import: prefork children would all carry the parent's pid.
    host: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    kill: Callable[[], None] = kill_this_process  # what the watchdog does to a job that does not stop
    # Sharded jobs: send_shard(job id, shard index, queue) enqueues one shard task; without it (in-process
    # use) a job runs its shards here, one after another. shard_samples: the automatic cut (0: never).
    send_shard: Callable[[int, int, str | None], None] | None = None
    shard_samples: int = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, sessions: sessionmaker[Session], store: ArtifactStore, **overrides
    ) -> WorkerContext:
        """The context of a worker configured by `settings` (ADVAUDIT_* variables)."""
        values = {
            "device": settings.device,
            "progress_interval_s": settings.progress_interval_s,
            "lease_s": settings.job_lease_s,
            "heartbeat_interval_s": settings.heartbeat_interval_s,
            "time_limit_s": float(settings.job_time_limit_s),
            "kill_grace_s": settings.job_kill_grace_s,
            "max_attempts": settings.job_max_attempts,
            "scratch_root": settings.scratch_root,
            "shard_samples": settings.shard_samples,
        }
        return cls(sessions=sessions, store=store, **(values | overrides))


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
    key = (
        record.sha256,
        record.arch,
        record.num_classes,
        tuple(record.input_shape),
        tuple(record.mean or ()),
        tuple(record.std or ()),
        device,
    )

    def load() -> LoadedModel:  # the checkpoint is read whole here: its local copy is needed only meanwhile
        with _local_copy(context, record.storage_key, _missing_model(record)) as path:
            return load_model(
                path,
                input_shape=tuple(record.input_shape),
                arch=record.arch,
                num_classes=record.num_classes if record.arch else None,
                mean=record.mean,
                std=record.std,
                device=device,
            )

    return MODELS.get(key, load)


def _missing_model(record: ModelRecord) -> ModelError:
    return ModelError(f"the checkpoint of model {record.name} {record.version} is missing from the store")


@contextmanager
def _local_copy(context: WorkerContext, key: str, missing: Exception) -> Iterator[Path]:
    """A local file of object `key` (from the worker's cache when the store is remote) for the block."""
    with ExitStack() as stack:
        try:
            path = stack.enter_context(context.store.local_path(key))
        except FileNotFoundError:
            raise missing from None
        yield path


def _pin(path: Path, link: Path) -> None:
    """`link` → `path` for the job: a hard link keeps a cached copy's data even if the cache evicts it meanwhile."""
    try:
        os.link(path, link)
    except OSError:  # another filesystem: a symbolic link (to the store's own file, or the cache's)
        link.symlink_to(path)


def _open_dataset(record: DatasetRecord, context: WorkerContext, workdir: Path):
    if record.storage_key is None:
        return load_dataset(record.source)
    # Stored files are named by hash; the loaders read the format from the suffix. The dataset is read batch
    # by batch for the whole job, so the job's folder keeps its own link to the file.
    link = workdir / f"dataset{DATASET_SUFFIX.get(record.format, '')}"
    missing = DatasetError(f"the file of dataset {record.name} is missing from the store")
    with _local_copy(context, record.storage_key, missing) as path:
        _pin(path, link)
    image_size = record.input_shape[-1] if record.format.startswith("imagefolder") else None
    return load_dataset(link, image_size=image_size)


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


def record_results(
    context: WorkerContext, job_id: int, attempt: int, document: dict, report_dir: Path
) -> None:
    """Store a report folder's files and mark the job succeeded with its results, in one transaction."""
    stored = [
        (path.name, *context.store.put_file(path)) for path in sorted(report_dir.iterdir()) if path.is_file()
    ]
    with session_scope(context.sessions) as session:
        job = repo.jobs.get(session=session, job_id=job_id)
        # The fenced status change comes first: it raises before a stale attempt touches any result row,
        # and on PostgreSQL its row lock makes a concurrent attempt's write wait for this one's outcome.
        repo.jobs.transition(session=session, job=job, new_status=SUCCEEDED, attempt=attempt, report=document)
        repo.results.replace_results(session=session, job=job, report_document=document)
        for name, key, sha256, size in stored:
            repo.results.put_artifact(
                session=session,
                job=job,
                name=name,
                kind=ARTIFACT_KINDS.get(Path(name).suffix, "file"),
                storage_key=key,
                sha256=sha256,
                size_bytes=size,
            )


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
        job: Job | None = repo.jobs.claim(
            session=session,
            job_id=job_id,
            worker_host=context.host,
            lease_s=context.lease_s,
            max_attempts=context.max_attempts,
        )
        if job is None:
            retry_after = _leased(repo.jobs.get(session=session, job_id=job_id), context.lease_s)
            if retry_after is not None:
                raise JobLeased(job_id, retry_after)
            return None
        attempt, model_record, dataset_record = job.attempts, job.model, job.dataset
        config_data = dict(job.config)
        session.expunge_all()
    _discard_stale_scratch(context)
    control = JobControl(context, job_id, attempt)
    try:
        config = job_config(config_data, context)
        ranges = (
            planned_ranges(
                config.shards,
                dataset_record.num_samples,
                config.limit,
                config.batch_size,
                context.shard_samples,
            )
            if context.send_shard is not None
            else []
        )
        if len(ranges) > 1:
            from worker.shard_merge import start_sharded  # noqa: PLC0415 (it builds on this module)

            return start_sharded(context, job_id, attempt, ranges)
    except (StaleJob, InvalidTransition) as error:
        log.info("job %s attempt %s lost: %s", job_id, attempt, error)
        return None
    except Exception as error:  # options the worker cannot honour: the job fails with the reason
        log.exception("job %s failed", job_id)
        return _finish(context, job_id, attempt, FAILED, error=public_message(error, {}))
    return record_outcome(
        context,
        control,
        model_record,
        dataset_record,
        config,
        lambda loaded, dataset: evaluate(
            loaded, dataset, config, progress=control.progress, should_stop=control.should_stop
        ),
    )


def job_config(config_data: dict[str, Any], context: WorkerContext) -> EvaluationConfig:
    """The job's options, with the worker's device unless the job names one."""
    config = EvaluationConfig(**config_data)
    if config.device == "auto" and context.device != "auto":
        config = replace(config, device=context.device)
    return config


def record_outcome(
    context: WorkerContext,
    control: JobControl,
    model_record: ModelRecord,
    dataset_record: DatasetRecord,
    config: EvaluationConfig,
    compute: Callable[[LoadedModel, Dataset], Report],
    failure: str = "",
) -> str | None:
    """Open the job's model and dataset in its scratch folder, `compute` its report and record the results in
    one transaction. The job's final status: succeeded, failed with a readable message (after `failure`),
    cancelled; None when this attempt no longer owns the job."""
    job_id, attempt = control.job_id, control.attempt
    aliases: dict[str, str] = {}
    try:
        with (
            watched(control, context.kill),
            scratch.job_folder(context.scratch_root, job_id, attempt) as workdir,
        ):
            aliases = _aliases(context, model_record, dataset_record, workdir)
            # the loaders take a concrete device, never "auto"
            loaded = _load_model(model_record, context, str(resolve_device(config.device)))
            report = compute(loaded, _open_dataset(dataset_record, context, workdir))
            # The files were opened from the store by hash; the report names what the user registered.
            report.model = replace(report.model, source=f"{model_record.name}:{model_record.version}")
            report.dataset = replace(report.dataset, source=dataset_record.name)
            _store_results(context, job_id, attempt, report, workdir)
        return SUCCEEDED
    except EvaluationCancelled:
        return _stopped(context, control)
    except (StaleJob, InvalidTransition) as error:
        log.info("job %s attempt %s lost: %s", job_id, attempt, error)
        return None
    except Exception as error:  # a model's own code can raise anything: the job fails with its message
        log.exception("job %s failed", job_id)  # the whole story for the operator, the gist in the job
        return _finish(context, job_id, attempt, FAILED, error=failure + public_message(error, aliases))


def _discard_stale_scratch(context: WorkerContext) -> None:
    """Folders of earlier attempts killed on this data directory (a pool child's death restarts no worker)."""
    if context.scratch_root is None:  # the shared system temp directory: not ours to judge
        return
    try:
        scratch.discard_stale(context.scratch_root, context.sessions)
    except Exception:  # housekeeping must never fail a job
        log.warning("could not look for stale job folders in %s", context.scratch_root, exc_info=True)


def _stopped(context: WorkerContext, control: JobControl) -> str | None:
    """The outcome of an evaluation that stopped at a check: cancelled, over its time limit, or lost."""
    if control.reason is StopReason.TIME_LIMIT:
        return _finish(
            context, control.job_id, control.attempt, FAILED, error=time_limit_message(context.time_limit_s)
        )
    if control.reason is StopReason.LOST:
        return None
    return _finish(context, control.job_id, control.attempt, CANCELLED)


def _aliases(
    context: WorkerContext, model: ModelRecord, dataset: DatasetRecord, workdir: Path
) -> dict[str, str]:
    """Server paths that may appear in an error, and how the user knows them."""
    names = {
        str(workdir / f"dataset{DATASET_SUFFIX.get(dataset.format, '')}"): f"dataset {dataset.name}",
        str(workdir): "the job's folder",
    }
    for key, name in (
        (model.storage_key, f"model {model.name} {model.version}"),
        (dataset.storage_key, f"dataset {dataset.name}"),
    ):
        path = context.store.local_file(key) if key else None
        if path is not None:
            names[str(path)] = name
    return names


def settle_lost_process(
    context: WorkerContext, job_id: int, worker_host: str, *, timed_out: bool, reason: str
) -> str | None:
    """A job's process died under Celery's eyes (killed at the hard time limit, or lost): settle its row.

    Called by the worker's main process, which outlives its pool child. Only a job still running under that
    child is touched: timed out, it fails (cancelled when a cancel was pending); lost, it is queued again at
    once (the redelivered message claims it without waiting for the lease) or fails past max_attempts.
    """
    with session_scope(context.sessions) as session:
        job = repo.jobs.get(session=session, job_id=job_id)
        if job is None or job.status != RUNNING or job.worker_host != worker_host:
            return None
        if timed_out:
            status = CANCELLED if job.cancel_requested else FAILED
            error = (
                None
                if job.cancel_requested
                else (
                    f"{time_limit_message(context.time_limit_s)}; its process was killed at the worker's hard limit"
                )
            )
            fields = {"error": error, "lost_reason": reason}
        else:
            exhausted = repo.jobs.attempts_exhausted(job.attempts, context.max_attempts, reason)
            status = FAILED if exhausted else QUEUED
            fields = {"error": exhausted, "lost_reason": reason} | (
                {} if exhausted else {"worker_host": None}
            )
        try:
            repo.jobs.transition(session=session, job=job, new_status=status, attempt=job.attempts, **fields)
        except (StaleJob, InvalidTransition):
            return None
    log.warning("job %s: its process was lost (%s); now %s", job_id, reason, status)
    return status


def requeue_abandoned(context: WorkerContext, send: Callable[[int, str | None], None]) -> list[int]:
    """Queue again the running jobs whose heartbeat is older than the lease (their worker died); their ids.

    Redis hands an unacknowledged task back by itself after the visibility timeout; the embedded SQLite
    broker never does, so without this sweep a job whose worker was killed would stay "running" forever.
    A duplicate message is harmless: only one claim of each attempt wins. A job lost max_attempts times
    fails instead. Scratch folders of attempts that are over go too.
    """
    _discard_stale_scratch(context)
    if not context.lease_s:
        return []
    cutoff = utcnow() - timedelta(seconds=context.lease_s)
    requeued: list[tuple[int, str | None]] = []
    with session_scope(context.sessions) as session:
        for job in repo.jobs.list_abandoned(session=session, heartbeat_before=cutoff):
            exhausted = repo.jobs.attempts_exhausted(
                job.attempts, context.max_attempts, repo.jobs.SILENT_WORKER
            )
            status = FAILED if exhausted else QUEUED
            try:  # fenced by the attempt it was seen with: a worker that just came back keeps its job
                repo.jobs.transition(
                    session=session,
                    job=job,
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
    for job_id, queue in requeued:  # after the commit: a worker must find the row queued
        log.warning("job %s: its worker stopped sending heartbeats; queued again", job_id)
        send(job_id, queue)
    return [job_id for job_id, _ in requeued]
