"""Reliability test 6: Redis restarts while jobs wait in the queue; none is lost.

Runs its own redis-server (the shared one must not be restarted under other tests), with the append-only
file fsynced on every write: that persistence, not Celery, is what keeps queued messages across a broker
restart, so a production Redis broker needs it too (`appendonly yes`).
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator

import pytest

from tests.support.service_harness import (
    RedisServer,
    ServiceEnv,
    open_env,
    register_inputs,
    unavailable,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)

TINY = {"limit": 16, "eps": [0, 8 / 255], "cam": "none", "triptychs": 0}
QUEUED_JOBS = 6


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def service(postgres_database, private_redis, tmp_path_factory) -> Iterator[ServiceEnv]:
    env = open_env(postgres_database, private_redis.url, tmp_path_factory)
    yield env
    env.close()


def test_jobs_queued_across_a_redis_restart_all_run(service, private_redis):
    inputs = register_inputs(service)
    worker = service.start_worker("before").wait_ready()
    assert (
        service.wait_finished(service.submit(inputs["model"], inputs["digits"], TINY), 60).status
        == "succeeded"
    )
    # The task acknowledges after the job's row says succeeded (it still checks for an audit run then):
    # stopped before that, the worker would hand its message back and the queue would hold one more.
    wait_for(lambda: private_redis.unacknowledged() == 0, 30, "the finished task's acknowledgement")
    worker.kill(signal.SIGTERM)  # warm shutdown: nothing is running, nothing is left unacknowledged

    job_ids = [service.submit(inputs["model"], inputs["digits"], TINY) for _ in range(QUEUED_JOBS)]
    assert private_redis.queue_length(service.queue) == QUEUED_JOBS
    private_redis.stop()  # SIGTERM, as `redis-cli shutdown`: the append-only file is flushed
    private_redis.start()
    assert private_redis.queue_length(service.queue) == QUEUED_JOBS
    service.start_worker("after").wait_ready()

    jobs = [service.wait_finished(job_id, timeout_s=60) for job_id in job_ids]
    assert [job.status for job in jobs] == ["succeeded"] * QUEUED_JOBS
    assert {job.attempts for job in jobs} == {1}
    assert all(service.row_counts(job.id)["sweep_points"] == 2 for job in jobs)
