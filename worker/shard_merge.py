"""A sharded job's two ends: cutting it into shard tasks, and merging their outcomes into its results.

The worker that claims the job creates its shard rows and sends one task per shard; the worker whose shard
brings the job's counter to the total (db.repositories.shards.complete) merges: it reads every shard's
outcomes from the store, runs the finishing step once (services.evaluation.finish) and records the results
in one transaction, fenced by the job's attempt, as an unsharded job does.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from db import repositories as repo
from db.session import session_scope
from services.checkpoints import LoadedModel
from services.datasets import Dataset
from services.errors import ShardError
from services.evaluation import finish
from services.job_states import FAILED, RUNNING, SUCCEEDED
from services.report import Report
from services.shard_outcomes import sweep_from_npz
from services.sweep import SweepResult
from worker.job_control import JobControl
from worker.messages import public_message
from worker.runner import WorkerContext, _finish, job_config, record_outcome

log = logging.getLogger(__name__)


def start_sharded(
    context: WorkerContext, job_id: int, attempt: int, ranges: list[tuple[int, int]]
) -> str | None:
    """Create the claimed job's shards (or find them, on a later attempt) and send a task for each one
    not done yet; merge at once when every shard is done already (the merge of an earlier attempt was lost)."""
    assert context.send_shard is not None, "only a worker that can send shard tasks cuts jobs into shards"
    with session_scope(context.sessions) as session:
        job = repo.jobs.get(session=session, job_id=job_id)
        if job is None or job.status != RUNNING or job.attempts != attempt:
            return None
        shards = repo.shards.create(session=session, job=job, ranges=ranges)
        repo.jobs.update(session=session, job=job, worker_host=None)  # the shards' workers hold it now
        pending = [shard.shard_index for shard in shards if shard.status != SUCCEEDED]
        queue = job.queue
    if not pending:
        return merge_shards(context, job_id, attempt)
    for index in pending:  # after the commit: a worker must find the shard's row
        context.send_shard(job_id, index, queue)
    log.info("job %s: sent %d of its %d shards", job_id, len(pending), len(ranges))
    return RUNNING


def _read_outcomes(context: WorkerContext, key: str | None, index: int) -> bytes:
    if key is None:
        raise ShardError(f"shard {index} is done but recorded no outcomes")
    try:
        with context.store.open(key) as stream:
            return stream.read()
    except FileNotFoundError:
        raise ShardError(f"the outcomes of shard {index} are missing from the artifact store") from None


def _timing(shards: list[dict[str, Any]], merge_seconds: float, merge_worker: str) -> dict[str, Any]:
    """Which worker ran which shard and for how long, per worker, and the merge."""
    workers: dict[str, dict[str, Any]] = {}
    for shard in shards:
        entry = workers.setdefault(shard["worker"], {"worker": shard["worker"], "shards": 0, "seconds": 0.0})
        entry["shards"] += 1
        entry["seconds"] += shard["seconds"]
    return {
        "shards": shards,
        "workers": sorted(workers.values(), key=lambda entry: entry["worker"]),
        "merge_seconds": merge_seconds,
        "merge_worker": merge_worker,
    }


def merge_shards(context: WorkerContext, job_id: int, attempt: int) -> str | None:
    """Merge a job whose shards are all done: the finishing step over their outcomes, the results recorded
    in one transaction. None when this attempt does not own the job (the merge happened elsewhere)."""
    with session_scope(context.sessions) as session:
        job = repo.jobs.get(session=session, job_id=job_id)
        if job is None or job.status != RUNNING or job.attempts != attempt:
            return None
        shards = list(repo.shards.list(session=session, job_id=job_id))
        model_record, dataset_record, config_data = job.model, job.dataset, dict(job.config)
        session.expunge_all()
    control = JobControl(context, job_id, attempt)
    control.fraction = repo.shards.SWEEP_SHARE  # the sweeps are done: the merge is the rest
    started = time.perf_counter()

    def merged(loaded: LoadedModel, dataset: Dataset) -> Report:
        if any(shard.status != SUCCEEDED for shard in shards):
            raise ShardError("the job's shards are not all done; it cannot be merged yet")
        parts: list[SweepResult] = []
        for shard in shards:
            sweep, first = sweep_from_npz(
                _read_outcomes(context, shard.outcome_key, shard.shard_index), config
            )
            if (first, first + len(sweep.labels)) != (shard.sample_start, shard.sample_stop):
                raise ShardError(f"the stored outcomes of shard {shard.shard_index} are of other samples")
            parts.append(sweep)
        report = finish(
            loaded,
            dataset,
            config,
            SweepResult.concat(parts),
            sweep_seconds=sum(shard.seconds or 0.0 for shard in shards),
            should_stop=control.should_stop,
        )
        rows = [
            {
                "index": shard.shard_index,
                "start": shard.sample_start,
                "stop": shard.sample_stop,
                "worker": shard.worker_host,
                "seconds": shard.seconds,
                "attempts": shard.attempts,
            }
            for shard in shards
        ]
        report.timing |= _timing(rows, time.perf_counter() - started, context.host)
        return report

    try:
        config = job_config(config_data, context)
    except Exception as error:
        return _finish(
            context, job_id, attempt, FAILED, error=f"merging the shards: {public_message(error, {})}"
        )
    return record_outcome(
        context, control, model_record, dataset_record, config, merged, failure="merging the shards: "
    )
