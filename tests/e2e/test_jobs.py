"""Jobs through Redis → Celery worker → PostgreSQL: results, cancellation (3), failing models (4), load (5)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from db import repositories as repo
from db.models import Job
from db.session import session_scope
from services.checkpoints import load_model
from services.datasets import load_dataset
from services.evaluation import evaluate
from services.specs import EvaluationConfig
from tests.support.builders import FORWARD_ERROR, INPUT_SHAPE, add_model_file, write_faulty_model
from tests.support.reports import comparable_report
from tests.support.service_harness import TERMINAL, register_inputs, wait_for

pytestmark = pytest.mark.timeout(180)

CONFIG = {"limit": 48, "eps": [0, 2 / 255, 8 / 255], "cam_samples": 4, "targeted": "next", "device": "cpu"}
LONG = {"batch_size": 8, "targeted": "next", "cam": "none"}  # on digits:train: 180 batches, seconds of work
TINY = {"limit": 16, "eps": [0, 8 / 255], "cam": "none", "triptychs": 0}


@pytest.fixture(scope="module")
def inputs(service) -> dict[str, int]:
    return register_inputs(service)


@pytest.fixture(scope="module")
def worker(service):
    """The module's first worker, started once and shared by the tests below."""
    return service.start_worker("main").wait_ready()


def test_a_job_succeeds_with_the_in_process_report(service, inputs, worker):
    job_id = service.submit(inputs["model"], inputs["digits"], CONFIG)

    job = service.wait_finished(job_id, timeout_s=60)

    assert (job.status, job.progress, job.attempts, job.error) == ("succeeded", 1.0, 1, None)
    with session_scope(service.sessions) as session:
        path = service.store.path(repo.models.get(session=session, model_id=inputs["model"]).storage_key)
    expected = evaluate(
        load_model(path, input_shape=INPUT_SHAPE), load_dataset("digits"), EvaluationConfig(**CONFIG)
    )
    expected = json.loads(json.dumps(expected.to_dict()))
    assert comparable_report(job.report) == comparable_report(expected)
    assert job.report["dataset"]["source"] == "digits"
    assert service.row_counts(job_id)["sweep_points"] == 2 * len(CONFIG["eps"])


def test_a_cancelled_job_stops_and_the_worker_runs_the_next_one(service, inputs, worker):
    job_id = service.submit(inputs["model"], inputs["digits_train"], LONG)
    running = service.wait_until(
        job_id,
        lambda job: job.status == "running" and job.progress > 0.05,
        timeout_s=60,
        what="to make progress",
    )

    with session_scope(service.sessions) as session:
        repo.jobs.request_cancel(session=session, job=repo.jobs.get(session=session, job_id=job_id))

    job = service.wait_finished(job_id, timeout_s=30)
    assert job.status == "cancelled" and job.error is None and job.report is None
    assert running.progress <= job.progress < 0.95
    assert service.row_counts(job_id) == {"sweep_points": 0, "cam_audits": 0, "artifacts": 0}
    assert worker.alive()
    next_id = service.submit(inputs["model"], inputs["digits"], TINY)
    following = service.wait_finished(next_id, timeout_s=60)
    assert following.status == "succeeded"
    assert following.worker_host == job.worker_host  # the same pool process, still serving


def test_a_model_whose_forward_raises_fails_the_job_with_its_message(service, inputs, worker, tmp_path):
    with session_scope(service.sessions) as session:
        model_id = add_model_file(
            session, service.store, write_faulty_model(tmp_path / "raises.pt"), "raises"
        ).id

    job = service.wait_finished(service.submit(model_id, inputs["digits"], TINY), timeout_s=60)

    assert job.status == "failed" and FORWARD_ERROR in job.error
    assert job.report is None and service.row_counts(job.id)["sweep_points"] == 0
    assert worker.alive()


def test_concurrent_clients_submit_jobs_none_lost_or_duplicated(service, inputs, worker):
    second = service.start_worker("second")
    try:
        second.wait_ready()
        with session_scope(service.sessions) as session:
            before = session.scalar(select(func.count()).select_from(Job))
        barrier = threading.Barrier(20)

        def client(_: int) -> list[int]:
            barrier.wait()  # all twenty clients submit at the same moment
            return [service.submit(inputs["model"], inputs["digits"], TINY) for _ in range(2)]

        with ThreadPoolExecutor(max_workers=20) as pool:
            job_ids = [job_id for ids in pool.map(client, range(20)) for job_id in ids]

        assert len(set(job_ids)) == 40

        def all_finished() -> list[Job] | None:
            with session_scope(service.sessions) as session:
                jobs = repo.jobs.list(session=session, ids=job_ids, limit=100)
            return jobs if all(job.status in TERMINAL for job in jobs) else None

        jobs = wait_for(
            all_finished, 150, "40 jobs to finish", lambda: service.diagnose(job_ids), interval_s=0.5
        )
        with session_scope(service.sessions) as session:
            assert session.scalar(select(func.count()).select_from(Job)) == before + 40
        assert sorted(job.status for job in jobs) == ["succeeded"] * 40
        assert {job.attempts for job in jobs} == {1}  # each ran once: no duplicate delivery
        counts = {job.id: service.row_counts(job.id) for job in jobs}
        artifacts = len(jobs[0].report["artifacts"])
        assert all(c == {"sweep_points": 2, "cam_audits": 0, "artifacts": artifacts} for c in counts.values())
        assert len({job.worker_host for job in jobs}) == 2  # both workers took jobs
    finally:
        second.kill()
