"""Time limits, hung forward passes, cancellation latency and poison jobs on a real prefork worker (PG + Redis)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from db import repositories as repo
from db.base import utcnow
from db.session import session_scope
from tests.support.builders import add_model_file, write_faulty_model
from tests.support.service_harness import register_inputs

pytestmark = pytest.mark.timeout(240)

LIMIT_S, GRACE_S, HEARTBEAT_S = 8, 2, 1
LIMITS = {
    "ADVAUDIT_JOB_TIME_LIMIT_S": str(LIMIT_S),
    "ADVAUDIT_JOB_KILL_GRACE_S": str(GRACE_S),
    "ADVAUDIT_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
    "ADVAUDIT_JOB_MAX_ATTEMPTS": "2",
}
SMALL = {"batch_size": 8, "eps": [0, 8 / 255], "cam": "none", "triptychs": 0, "limit": 32}
# One batch of all 1437 training digits and 150 ε: far longer than the limit unless stopped inside the batch.
LONG_BATCH = {"batch_size": 2048, "eps": [i / 1000 for i in range(150)], "cam": "none", "triptychs": 0}


@pytest.fixture(scope="module")
def inputs(service, tmp_path_factory) -> dict[str, int]:
    ids = register_inputs(service)
    hangs = write_faulty_model(tmp_path_factory.mktemp("models") / "hangs.pt", "hangs")
    with session_scope(service.sessions) as session:
        ids["hangs"] = add_model_file(session, service.store, hangs, "hangs").id
    return ids


@pytest.fixture(scope="module")
def worker(service):
    return service.start_worker("limited", LIMITS).wait_ready()


def _pid(job) -> int:
    return int(job.worker_host.rsplit(":", 1)[1])  # worker_host is "host:pid" of the pool child


def _seconds(later, earlier) -> float:
    return (later - earlier).total_seconds()


def test_a_hung_forward_pass_fails_at_the_time_limit_and_the_next_job_runs(service, inputs, worker):
    job = service.wait_finished(service.submit(inputs["hangs"], inputs["digits"], SMALL), timeout_s=90)
    assert job.status == "failed" and job.attempts == 1
    assert job.error.startswith(f"exceeded the time limit of {LIMIT_S} s"), job.error
    overrun = _seconds(job.finished_at, job.started_at) - LIMIT_S
    print(f"hung job stopped {overrun:.2f} s past its {LIMIT_S} s limit (kill grace {GRACE_S} s)")
    assert 0 <= overrun <= GRACE_S + HEARTBEAT_S + 2.0
    following = service.wait_finished(service.submit(inputs["model"], inputs["digits"], SMALL), timeout_s=90)
    assert following.status == "succeeded"
    assert _pid(following) != _pid(job)  # a fresh pool child; the worker itself lives on
    assert worker.alive()


def test_a_cancel_stops_a_running_job_inside_its_batch(service, inputs, worker):
    job_id = service.submit(inputs["model"], inputs["digits_train"], LONG_BATCH)
    service.wait_until(job_id, lambda job: job.status == "running", timeout_s=60, what="to start")
    time.sleep(1.0)
    with session_scope(service.sessions) as session:
        requested = utcnow()
        repo.jobs.request_cancel(session=session, job=repo.jobs.get(session=session, job_id=job_id))
    job = service.wait_finished(job_id, timeout_s=60)
    latency = _seconds(job.finished_at, requested)
    print(f"cancelled {latency:.2f} s after the request")
    assert job.status == "cancelled" and job.error is None
    assert latency <= 2.0 + 1.0  # target: 2 s plus one forward pass (well under a second here)


def test_a_cancel_of_a_hung_job_ends_it_cancelled_within_the_grace(service, inputs, worker):
    job_id = service.submit(inputs["hangs"], inputs["digits"], SMALL)
    service.wait_until(job_id, lambda job: job.status == "running", timeout_s=60, what="to start")
    with session_scope(service.sessions) as session:
        requested = utcnow()
        repo.jobs.request_cancel(session=session, job=repo.jobs.get(session=session, job_id=job_id))
    job = service.wait_finished(job_id, timeout_s=60)
    assert job.status == "cancelled"
    assert _seconds(job.finished_at, requested) <= GRACE_S + HEARTBEAT_S + 2.0
    assert worker.alive()


def test_a_job_that_keeps_killing_its_worker_fails_after_max_attempts(service, inputs, worker):
    """Each attempt's pool child is SIGKILLed mid-job (as the OOM killer would): after two, the job fails."""
    job_id = service.submit(inputs["model"], inputs["digits_train"], LONG_BATCH)
    for attempt in (1, 2):
        running = service.wait_until(
            job_id,
            lambda job, a=attempt: job.status == "running" and job.attempts == a,
            timeout_s=60,
            what=f"to run attempt {attempt}",
        )
        os.kill(_pid(running), signal.SIGKILL)
    job = service.wait_finished(job_id, timeout_s=60)
    assert job.status == "failed" and job.attempts == 2
    assert job.error == (
        "the worker died or was killed 2 times while running this job, so it is not run again; "
        "last: its process died (signal 9 (SIGKILL))"
    ), job.error
    assert service.row_counts(job_id) == {"sweep_points": 0, "cam_audits": 0, "artifacts": 0}
    following = service.wait_finished(service.submit(inputs["model"], inputs["digits"], SMALL), timeout_s=90)
    assert following.status == "succeeded" and worker.alive()
    scratch = service.root / "data" / "scratch"  # the killed attempts' folders went at the next job's start
    assert sorted(scratch.iterdir()) == []
