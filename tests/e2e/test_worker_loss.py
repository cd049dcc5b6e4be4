"""Reliability test 2: a worker killed in the middle of a job; the job is redelivered and completed once."""

from __future__ import annotations

import os
import signal

import pytest

from db import repositories as repo
from db.session import session_scope
from tests.support.service_harness import register_inputs, wait_for

pytestmark = pytest.mark.timeout(180)

# digits:train, batch 8, seven ε untargeted and targeted: 180 batches, several seconds of work per run.
LONG = {"batch_size": 8, "targeted": "next", "cam": "none"}
SWEEP_POINTS = 14


@pytest.fixture(scope="module")
def inputs(service) -> dict[str, int]:
    return register_inputs(service)


def test_a_job_survives_its_worker_being_killed(service, inputs):
    """SIGKILL the whole worker (main process and pool child): the message stays unacknowledged in Redis,
    is redelivered after the visibility timeout, and the new worker takes over once the lease expired."""
    first = service.start_worker("doomed").wait_ready()
    job_id = service.submit(inputs["model"], inputs["digits_train"], LONG)
    victim = service.wait_until(
        job_id,
        lambda job: job.status == "running" and job.progress >= 0.2,
        timeout_s=60,
        what="to be well under way",
    )
    assert victim.progress < 0.95, "the job finished too fast to be killed in the middle"

    first.kill(signal.SIGKILL)
    service.start_worker("rescuer").wait_ready()

    job = service.wait_finished(job_id, timeout_s=90)
    assert (job.status, job.attempts, job.error) == ("succeeded", 2, None)
    assert job.worker_host != victim.worker_host
    assert service.row_counts(job_id)["sweep_points"] == service.distinct_sweep_points(job_id) == SWEEP_POINTS
    assert service.row_counts(job_id)["artifacts"] == len(job.report["artifacts"])


def test_a_job_survives_its_pool_process_being_killed(service, inputs):
    """SIGKILL only the pool child (as the OOM killer would): Celery requeues the task at once
    (reject_on_worker_lost) while the lease is still fresh; the task retries until the lease expires."""
    worker = (
        next((w for w in service.workers if w.alive()), None) or service.start_worker("steady").wait_ready()
    )
    job_id = service.submit(inputs["model"], inputs["digits_train"], LONG)
    victim = service.wait_until(
        job_id,
        lambda job: job.status == "running" and job.progress >= 0.2,
        timeout_s=60,
        what="to be well under way",
    )
    assert victim.progress < 0.95, "the job finished too fast to be killed in the middle"

    os.kill(int(victim.worker_host.rsplit(":", 1)[1]), signal.SIGKILL)  # worker_host is "host:pid"

    job = service.wait_finished(job_id, timeout_s=90)
    assert (job.status, job.attempts, job.error) == ("succeeded", 2, None)
    assert job.worker_host != victim.worker_host  # a new pool process of the same worker
    assert worker.alive()
    assert service.row_counts(job_id)["sweep_points"] == service.distinct_sweep_points(job_id) == SWEEP_POINTS


def _shards(service, job_id: int) -> list:
    with session_scope(service.sessions) as session:
        rows = repo.shards.list(session=session, job_id=job_id)
        session.expunge_all()
        return list(rows)


def test_a_shard_survives_its_pool_process_being_killed(service, inputs):
    """A job in three shards: SIGKILL the pool child running one of them. That shard alone is queued again
    and recomputed once (attempt 2); the others are not run again, and the merged results are written once."""
    worker = (
        next((w for w in service.workers if w.alive()), None) or service.start_worker("sharded").wait_ready()
    )
    job_id = service.submit(inputs["model"], inputs["digits_train"], {**LONG, "shards": 3})

    def a_shard_under_way() -> object:
        running = [s for s in _shards(service, job_id) if s.status == "running" and s.progress >= 0.2]
        return running[0] if running else None

    victim = wait_for(a_shard_under_way, 60, f"a shard of job {job_id} to be well under way")
    assert victim.progress < 0.95, "the shard finished too fast to be killed in the middle"
    os.kill(int(victim.worker_host.rsplit(":", 1)[1]), signal.SIGKILL)

    job = service.wait_finished(job_id, timeout_s=120)
    assert (job.status, job.error, job.shards_done, job.shards_total) == ("succeeded", None, 3, 3)
    attempts = {s.shard_index: s.attempts for s in _shards(service, job_id)}
    assert attempts == {i: 2 if i == victim.shard_index else 1 for i in range(3)}
    assert worker.alive()
    assert service.row_counts(job_id)["sweep_points"] == service.distinct_sweep_points(job_id) == SWEEP_POINTS
    assert service.row_counts(job_id)["artifacts"] == len(job.report["artifacts"])
    timing = job.report["timing"]["shards"]
    assert [entry["attempts"] for entry in timing] == [attempts[i] for i in range(3)]
