"""worker.runner.requeue_abandoned: the jobs of a worker that died go back to the queue, once."""

from __future__ import annotations

from datetime import timedelta

from db import repositories as repo
from db.base import utcnow
from db.session import session_scope
from worker import runner

SMALL = {"limit": 16, "batch_size": 8, "eps": [0, 8 / 255], "cam": "none"}


def _claimed(sessions, demo_ids, heartbeat_age_s: float, queue: str = "evaluations") -> int:
    """A job claimed by a worker whose last heartbeat was `heartbeat_age_s` ago."""
    with session_scope(sessions) as session:
        job = repo.jobs.create(
            session=session, model_id=demo_ids[0], dataset_id=demo_ids[1], config=SMALL, queue=queue
        )
        session.flush()
        repo.jobs.claim(session=session, job_id=job.id, worker_host="gone:1")
        repo.jobs.update(session=session, job=job, heartbeat_at=utcnow() - timedelta(seconds=heartbeat_age_s))
        return job.id


def test_only_jobs_past_their_lease_are_queued_again_and_sent(sessions, context, demo_ids):
    dead = _claimed(sessions, demo_ids, heartbeat_age_s=3 * context.lease_s, queue="gpu")
    alive = _claimed(sessions, demo_ids, heartbeat_age_s=0.2 * context.lease_s)
    sent: list[tuple[int, str | None]] = []

    assert runner.requeue_abandoned(context, send=lambda job_id, queue: sent.append((job_id, queue))) == [
        dead
    ]
    assert sent == [(dead, "gpu")]  # on the queue it was routed to
    with session_scope(sessions) as session:
        requeued, running = (
            repo.jobs.get(session=session, job_id=dead),
            repo.jobs.get(session=session, job_id=alive),
        )
        assert (requeued.status, requeued.worker_host, requeued.progress) == ("queued", None, 0.0)
        assert (running.status, running.worker_host) == ("running", "gone:1")

    # queued now, so the next sweep leaves it to the message it was sent; the requeued job then runs
    assert runner.requeue_abandoned(context, send=lambda job_id, queue: sent.append((job_id, queue))) == []
    assert runner.run_job(dead, context) == "succeeded"
    with session_scope(sessions) as session:
        assert repo.jobs.get(session=session, job_id=dead).attempts == 2


def test_without_a_lease_nothing_is_ever_requeued(sessions, store, demo_ids):
    _claimed(sessions, demo_ids, heartbeat_age_s=10_000)
    context = runner.WorkerContext(sessions=sessions, store=store, lease_s=None)
    assert runner.requeue_abandoned(context, send=lambda job_id, queue: None) == []
