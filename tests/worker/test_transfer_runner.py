"""worker.transfer_runner on SQLite without a broker: the matrix, idempotency, cancel, failures, the task."""

from __future__ import annotations

import pytest

from contracts.tasks import EVALUATION_TASKS, Task
from db import repositories as repo
from db.session import session_scope
from services import transfer as transfer_service
from tests.support.builders import add_demo_model
from worker import celery_app, transfer_runner

CONFIG = {"eps": [0, 8 / 255], "steps": 2, "limit": 24, "batch_size": 8}


@pytest.fixture
def transfer_id(sessions, store, demo_ids) -> int:
    gap, digits = demo_ids
    with session_scope(sessions) as session:
        other = add_demo_model(session, store, "separable-cnn").id
        return repo.transfers.create(
            session=session,
            dataset_id=digits,
            source_ids=[gap, other],
            target_ids=[gap, other],
            config=CONFIG,
        ).id


def _job(sessions, transfer_id):
    with session_scope(sessions) as session:
        job = repo.transfers.get(session=session, transfer_id=transfer_id)
        return job, list(job.points)


def test_a_job_writes_its_matrix_once(sessions, context, transfer_id):
    assert transfer_runner.run_transfer_job(transfer_id, context) == "succeeded"
    job, points = _job(sessions, transfer_id)
    assert (job.status, job.progress, job.attempts, job.error) == ("succeeded", 1.0, 1, None)
    cells = [p for p in points if p.source_model_id is not None]
    worst = [p for p in points if p.source_model_id is None]
    assert len(cells) == 2 * 2 * 2 * 2 and len(worst) == 2 * 3 * 2
    assert all(p.n == 24 for p in points)
    assert transfer_runner.run_transfer_job(transfer_id, context) is None  # a redelivered task: nothing to do
    assert len(_job(sessions, transfer_id)[1]) == len(points)


def test_cancelling_a_running_job_stops_it_at_the_next_batch(sessions, context, transfer_id, monkeypatch):
    real = transfer_service.run_transfer

    def cancel_after_first_batch(*args, progress, **kwargs):
        def hooked(done, total):
            progress(done, total)
            with session_scope(sessions) as session:
                job = repo.transfers.get(session=session, transfer_id=transfer_id)
                repo.transfers.request_cancel(session=session, transfer_job=job)
            transfer_runner_control = kwargs["should_stop"].__self__
            transfer_runner_control.beat()

        return real(*args, progress=hooked, **kwargs)

    monkeypatch.setattr(transfer_runner, "run_transfer", cancel_after_first_batch)
    assert transfer_runner.run_transfer_job(transfer_id, context) == "cancelled"
    job, points = _job(sessions, transfer_id)
    assert job.status == "cancelled" and points == []


def test_a_model_that_raises_fails_the_job_with_its_message(sessions, context, transfer_id, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the forward pass exploded")

    monkeypatch.setattr(transfer_runner, "run_transfer", broken)
    assert transfer_runner.run_transfer_job(transfer_id, context) == "failed"
    job, points = _job(sessions, transfer_id)
    assert job.error == "RuntimeError: the forward pass exploded" and points == []


def test_the_transfer_task_is_registered_on_the_evaluation_queue():
    from worker import tasks

    assert Task.TRANSFER in celery_app.app.tasks and tasks.transfer.name == Task.TRANSFER
    assert Task.TRANSFER in EVALUATION_TASKS


def test_a_job_whose_worker_went_silent_is_queued_again_and_sent(sessions, context, transfer_id):
    from datetime import timedelta

    from db.base import utcnow

    with session_scope(sessions) as session:
        repo.transfers.claim(session=session, transfer_id=transfer_id, worker_host="gone", lease_s=5)
        job = repo.transfers.get(session=session, transfer_id=transfer_id)
        job.heartbeat_at = utcnow() - timedelta(seconds=60)
    sent = []
    assert transfer_runner.requeue_abandoned_transfers(context, lambda i, q: sent.append((i, q))) == [
        transfer_id
    ]
    assert sent == [(transfer_id, None)]
    job, _ = _job(sessions, transfer_id)
    assert (job.status, job.worker_host, job.lost_reason) == ("queued", None, repo.jobs.SILENT_WORKER)
    assert (
        transfer_runner.run_transfer_job(transfer_id, context) == "succeeded"
    )  # the next attempt finishes it
    assert _job(sessions, transfer_id)[0].attempts == 2
