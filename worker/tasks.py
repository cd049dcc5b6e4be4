"""Celery tasks: thin wrappers that pass ids to worker.runner, and the main-process side of lost pool children."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from billiard.exceptions import WorkerLostError
from celery.signals import worker_init, worker_process_init
from celery.worker.request import Request

from contracts.settings import get_settings
from contracts.tasks import Queue, Task
from db.session import make_engine, make_session_factory
from db.storage import open_store
from services.job_states import TERMINAL
from worker import audits, lifeline, scratch
from worker.celery_app import app
from worker.runner import JobLeased, WorkerContext, requeue_abandoned, run_job, settle_lost_process
from worker.shard_runner import requeue_abandoned_shards, run_shard, settle_lost_shard
from worker.transfer_runner import requeue_abandoned_transfers, run_transfer_job

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def worker_context() -> WorkerContext:
    """One engine, session factory and artifact store per process that runs jobs."""
    settings = get_settings()
    sessions = make_session_factory(make_engine(settings.database_url))
    return WorkerContext.from_settings(settings, sessions, open_store(settings), send_shard=send_shard)


def send_shard(job_id: int, shard_index: int, queue: str | None) -> None:
    """Enqueue one shard of a sharded job on the job's queue (any evaluation worker takes it)."""
    evaluate_shard.apply_async(args=[job_id, shard_index], queue=queue or Queue.EVALUATIONS)


@contextmanager
def short_lived_context() -> Iterator[WorkerContext]:
    """A context whose connections are closed afterwards: for the worker's main process, whose pool children
    are forked later and must not inherit open database connections."""
    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        yield WorkerContext.from_settings(settings, make_session_factory(engine), open_store(settings))
    finally:
        engine.dispose()


def _death(error: BaseException) -> str:
    found = re.search(r"signal \d+ \(\w+\)|exitcode -?\d+", str(error))
    return f"its process died ({found[0] if found else error})"


class EvaluateRequest(Request):
    """The worker's main process outlives a pool child that died running a job: it settles the job's row.

    Killed at the hard time limit, the job fails with that reason; otherwise lost (the OOM killer, a crash),
    it is queued again at once, or fails once it was lost max_attempts times.
    """

    def on_timeout(self, soft, timeout):
        if not soft:
            self._settle(timed_out=True, reason=f"killed at the worker's hard time limit of {timeout:g} s")
        super().on_timeout(soft, timeout)

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        error = getattr(exc_info.exception, "exc", exc_info.exception)  # unwrap ExceptionWithTraceback
        if isinstance(error, WorkerLostError):
            self._settle(timed_out=False, reason=_death(error))
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def settle(self, context: WorkerContext, worker_host: str, *, timed_out: bool, reason: str) -> str | None:
        """Settle the row this task's dead process held; its new status."""
        return settle_lost_process(
            context, int(self.args[0]), worker_host, timed_out=timed_out, reason=reason
        )

    def _settle(self, *, timed_out: bool, reason: str) -> None:
        if self.worker_pid is None or not self.args:
            return
        job_id = int(self.args[0])
        try:
            with short_lived_context() as context:
                worker_host = f"{socket.gethostname()}:{self.worker_pid}"
                status = self.settle(context, worker_host, timed_out=timed_out, reason=reason)
                if status in TERMINAL:
                    audits.job_ended(job_id, sessions=context.sessions)
        except Exception:  # the sweep settles it later: a running job without heartbeats is requeued
            log.exception("job %s: could not settle the row of its lost process", job_id)


# max_retries=None: a job held under a live lease is asked about again for as long as it runs.
@app.task(name=Task.EVALUATE, bind=True, ignore_result=True, max_retries=None, Request=EvaluateRequest)
def evaluate(self, job_id: int) -> str | None:
    """Run evaluation job `job_id` (idempotent: a redelivered or duplicate task finds nothing to do)."""
    try:
        status = run_job(int(job_id), worker_context())
    except JobLeased as leased:
        # Redelivered while another worker runs the job (worker lost and requeued, visibility timeout,
        # cold shutdown): keep a message alive rather than drop it, in case that worker dies too.
        raise self.retry(countdown=leased.retry_after_s) from None
    # Also when this call ran nothing (e.g. the job was cancelled while queued): the job may have ended.
    audits.job_ended(int(job_id))
    return status


class ShardRequest(EvaluateRequest):
    """As EvaluateRequest, for one shard: its row is queued again (or fails its job at the hard limit)."""

    def settle(self, context: WorkerContext, worker_host: str, *, timed_out: bool, reason: str) -> str | None:
        job_id, shard_index = int(self.args[0]), int(self.args[1])
        return settle_lost_shard(
            context, job_id, shard_index, worker_host, timed_out=timed_out, reason=reason
        )


@app.task(name=Task.EVALUATE_SHARD, bind=True, ignore_result=True, max_retries=None, Request=ShardRequest)
def evaluate_shard(self, job_id: int, shard_index: int) -> str | None:
    """Run one shard of a sharded job; the worker of the last one merges (idempotent: a redelivered task
    finds its shard done, or taken, and does nothing)."""
    try:
        status = run_shard(int(job_id), int(shard_index), worker_context())
    except JobLeased as leased:
        raise self.retry(countdown=leased.retry_after_s) from None
    audits.job_ended(int(job_id))
    return status


@app.task(name=Task.TRANSFER, bind=True, ignore_result=True, max_retries=None)
def transfer(self, transfer_id: int) -> str | None:
    """Run transfer job `transfer_id` (idempotent: a redelivered or duplicate task finds nothing to do)."""
    try:
        status = run_transfer_job(int(transfer_id), worker_context())
    except JobLeased as leased:
        raise self.retry(countdown=leased.retry_after_s) from None
    audits.transfer_ended(int(transfer_id))
    return status


def send_transfer(transfer_id: int, queue: str | None) -> None:
    transfer.apply_async(args=[transfer_id], queue=queue or Queue.EVALUATIONS)


@app.task(
    name=Task.REQUEUE_ABANDONED, ignore_result=True
)  # on the control queue (contracts.tasks.CONTROL_TASKS)
def requeue_abandoned_jobs() -> list[int]:
    """Sent by beat: queue again the jobs (and shards) whose worker stopped sending heartbeats; drop stale
    scratch folders."""
    context = worker_context()
    requeue_abandoned_shards(context, send_shard)
    requeue_abandoned_transfers(context, send_transfer)
    return requeue_abandoned(
        context,
        send=lambda job_id, queue: evaluate.apply_async(args=[job_id], queue=queue or Queue.EVALUATIONS),
    )


@worker_init.connect
def _follow_the_server(**_kwargs) -> None:
    """An embedded worker of `advaudit serve` dies with it, even when serve is killed (worker.lifeline)."""
    lifeline.watch()


@worker_init.connect
def _discard_stale_scratch(**_kwargs) -> None:
    """At start-up: the folders that attempts killed earlier (SIGKILL, time limits) could not remove."""
    try:
        with short_lived_context() as context:
            removed = scratch.discard_stale(context.scratch_root, context.sessions)
        if removed:
            log.info("removed %d stale job folder(s) from %s", len(removed), context.scratch_root)
    except Exception:  # the database may not be up yet; the requeue sweep tries again
        log.warning("could not look for stale job folders", exc_info=True)


@worker_process_init.connect
def _forget_inherited_connections(**_kwargs) -> None:
    """A forked pool child must not reuse the parent's database connections (they would share sockets)."""
    for cached in (worker_context, audits.audit_context):
        if cached.cache_info().currsize:
            cached().sessions.kw["bind"].dispose(close=False)
        cached.cache_clear()
