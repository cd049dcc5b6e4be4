"""Celery's hard time limit is the backstop when a job's watchdog cannot act: the main process settles the row."""

from __future__ import annotations

import pytest

from db.session import session_scope
from tests.support.builders import add_model_file, write_faulty_model
from tests.support.service_harness import register_inputs

pytestmark = pytest.mark.timeout(180)

LIMIT_S, GRACE_S = 3, 2
# The watchdog wakes only every 60 s here, long after the hard limit (3 + 2·2 s): only Celery can stop the job.
SLEEPY_WATCHDOG = {
    "ADVAUDIT_JOB_TIME_LIMIT_S": str(LIMIT_S),
    "ADVAUDIT_JOB_KILL_GRACE_S": str(GRACE_S),
    "ADVAUDIT_HEARTBEAT_INTERVAL_S": "60",
}
SMALL = {"batch_size": 8, "eps": [0, 8 / 255], "cam": "none", "triptychs": 0, "limit": 32}


def test_a_job_past_the_hard_limit_is_killed_and_failed_by_the_worker(service, tmp_path):
    inputs = register_inputs(service)
    with session_scope(service.sessions) as session:
        hangs = add_model_file(
            session, service.store, write_faulty_model(tmp_path / "hangs.pt", "hangs"), "hangs"
        ).id
    worker = service.start_worker("backstop", SLEEPY_WATCHDOG).wait_ready()

    job = service.wait_finished(service.submit(hangs, inputs["digits"], SMALL), timeout_s=60)
    assert job.status == "failed" and job.attempts == 1
    assert (
        job.error
        == f"exceeded the time limit of {LIMIT_S} s; its process was killed at the worker's hard limit"
    )
    assert job.lost_reason == f"killed at the worker's hard time limit of {LIMIT_S + 2 * GRACE_S:g} s"
    elapsed = (job.finished_at - job.started_at).total_seconds()
    # Celery counts from the task's start, a moment before the claim stamps started_at
    assert LIMIT_S + 2 * GRACE_S - 0.5 <= elapsed <= LIMIT_S + 2 * GRACE_S + 3

    following = service.wait_finished(service.submit(inputs["model"], inputs["digits"], SMALL), timeout_s=90)
    assert following.status == "succeeded" and worker.alive()
