"""Job status changes: the transition table through the database, exclusive claims, progress, cancel."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from db.errors import StaleJob
from db.repositories import jobs
from db.session import session_scope
from services.job_states import InvalidTransition
from tests.support.factories import add_job

LEASE = 60


@pytest.fixture
def job_id(factory) -> int:
    with session_scope(factory) as session:
        return add_job(session).id


def _get(factory, job_id):
    with session_scope(factory) as session:
        return jobs.get(session=session, job_id=job_id)


def test_lifecycle_sets_timestamps_and_fields(factory, job_id):
    with session_scope(factory) as session:
        job = jobs.claim(session=session, job_id=job_id, worker_host="gpu-1")
        assert (job.status, job.attempts, job.worker_host) == ("running", 1, "gpu-1")
        assert job.started_at is not None and job.finished_at is None
    with session_scope(factory) as session:
        job = jobs.get(session=session, job_id=job_id)
        jobs.transition(session=session, job=job, new_status="succeeded", result_key="k", attempt=1)
    job = _get(factory, job_id)
    assert (job.status, job.progress, job.result_key) == ("succeeded", 1.0, "k")
    assert job.finished_at >= job.started_at >= job.created_at


def test_failed_keeps_the_message(factory, job_id):
    with session_scope(factory) as session:
        job = jobs.claim(session=session, job_id=job_id, worker_host="w")
        jobs.transition(
            session=session, job=job, new_status="failed", error="the model's forward raised: boom"
        )
    assert _get(factory, job_id).error == "the model's forward raised: boom"


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ((), "succeeded"),
        (("cancelled",), "queued"),
        (("running", "failed"), "queued"),
        (("running", "succeeded"), "running"),
        (("running", "succeeded"), "cancelled"),
    ],
)
def test_invalid_transitions_are_refused_with_a_message(session, path, bad):
    job = add_job(session)
    for status in path:
        jobs.transition(session=session, job=job, new_status=status)
    with pytest.raises(InvalidTransition, match=f"cannot become {bad}"):
        jobs.transition(session=session, job=job, new_status=bad)
    assert job.status == (path[-1] if path else "queued")


def test_transition_checks_the_stored_status_not_a_stale_object(factory, job_id):
    with session_scope(factory) as stale_session:
        stale = jobs.get(session=stale_session, job_id=job_id)
        with session_scope(factory) as other:
            jobs.transition(session=other, job=jobs.get(session=other, job_id=job_id), new_status="cancelled")
        assert stale.status == "queued"  # the in-memory copy is out of date
        with pytest.raises(InvalidTransition, match="already cancelled"):
            jobs.transition(session=stale_session, job=stale, new_status="running")


def test_status_is_not_a_plain_field(session):
    job = add_job(session)
    with pytest.raises(ValueError, match="status"):
        jobs.update(session=session, job=job, status="succeeded")
    with pytest.raises(ValueError, match="attempts"):
        jobs.transition(session=session, job=job, new_status="running", attempts=5)
    jobs.update(session=session, job=job, queue="cpu")
    assert job.queue == "cpu"


def test_the_database_refuses_unknown_status_and_progress(session):
    job = add_job(session)
    job.status = "done"
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()
    job = add_job(session)
    job.progress = 1.5
    with pytest.raises(IntegrityError):
        session.flush()


def test_redelivered_running_job_is_reclaimed(factory, job_id):
    with session_scope(factory) as session:
        assert jobs.claim(session=session, job_id=job_id, worker_host="lost").attempts == 1
        jobs.report_progress(session=session, job_id=job_id, progress=0.4)
    # The worker died; the broker redelivers the task to another one.
    with session_scope(factory) as session:
        job = jobs.claim(session=session, job_id=job_id, worker_host="second")
        assert (job.status, job.attempts, job.worker_host, job.progress) == ("running", 2, "second", 0.0)
    with session_scope(factory) as session:  # the first run cannot report or finish any more
        assert jobs.report_progress(session=session, job_id=job_id, progress=0.9, attempt=1).lost is True
        with pytest.raises(StaleJob, match="attempt 2, not 1"):
            jobs.transition(
                session=session,
                job=jobs.get(session=session, job_id=job_id),
                new_status="succeeded",
                attempt=1,
            )


def test_a_live_lease_blocks_reclaiming(factory, job_id):
    with session_scope(factory) as session:
        assert jobs.claim(session=session, job_id=job_id, worker_host="alive", lease_s=60) is not None
    with session_scope(factory) as session:
        assert jobs.claim(session=session, job_id=job_id, worker_host="dup", lease_s=60) is None
        assert jobs.claim(session=session, job_id=job_id, worker_host="late", lease_s=0) is not None


def test_finished_jobs_are_not_claimed(factory, job_id):
    with session_scope(factory) as session:
        jobs.transition(session=session, job=jobs.get(session=session, job_id=job_id), new_status="cancelled")
    with session_scope(factory) as session:
        assert jobs.claim(session=session, job_id=job_id, worker_host="w") is None
        assert jobs.claim(session=session, job_id=999_999, worker_host="w") is None
    assert _get(factory, job_id).attempts == 0


def test_claim_is_exclusive_under_a_race(factory):
    """Eight workers race for each of several queued jobs: exactly one wins each."""
    workers = 8
    with session_scope(factory) as session:
        first = add_job(session)
        job_ids = [first.id] + [add_job(session, first.model, first.dataset).id for _ in range(3)]
    for job_id in job_ids:
        barrier = threading.Barrier(workers)

        def race(index: int, job_id=job_id, barrier=barrier) -> bool:
            barrier.wait()
            with session_scope(factory) as session:
                claimed = jobs.claim(session=session, job_id=job_id, worker_host=f"w{index}", lease_s=LEASE)
                return claimed is not None

        with ThreadPoolExecutor(workers) as pool:
            won = list(pool.map(race, range(workers)))
        assert sum(won) == 1
        job = _get(factory, job_id)
        assert (job.status, job.attempts, job.worker_host) == ("running", 1, f"w{won.index(True)}")


def test_progress_is_clamped_and_signals_cancel(factory, job_id):
    with session_scope(factory) as session:
        jobs.claim(session=session, job_id=job_id, worker_host="w")
    with session_scope(factory) as session:
        assert jobs.report_progress(session=session, job_id=job_id, progress=0.25, attempt=1).stop is False
        assert jobs.report_progress(session=session, job_id=job_id, progress=7).stop is False
    assert _get(factory, job_id).progress == 1.0
    with session_scope(factory) as session:
        job = jobs.request_cancel(session=session, job=jobs.get(session=session, job_id=job_id))
        assert (job.status, job.cancel_requested) == ("running", True)
    with session_scope(factory) as session:
        assert jobs.report_progress(session=session, job_id=job_id, progress=0.5) == (False, True)  # stop now
        jobs.transition(session=session, job=jobs.get(session=session, job_id=job_id), new_status="cancelled")
    job = _get(factory, job_id)
    # progress is still recorded while the cancel is pending (the job runs until its next check)
    assert (job.status, job.progress) == ("cancelled", 0.5) and job.finished_at is not None


def test_the_heartbeat_goes_on_while_a_cancel_is_pending(factory, job_id):
    """A job busy in a long batch after a cancel request must not look dead to the requeue sweep."""
    with session_scope(factory) as session:
        jobs.claim(session=session, job_id=job_id, worker_host="w")
        jobs.request_cancel(session=session, job=jobs.get(session=session, job_id=job_id))
    first = _get(factory, job_id).heartbeat_at
    time.sleep(0.01)
    with session_scope(factory) as session:
        beat = jobs.report_progress(session=session, job_id=job_id, progress=0.3, attempt=1)
    job = _get(factory, job_id)
    assert beat.stop and not beat.lost
    assert job.heartbeat_at > first and job.progress == 0.3 and job.status == "running"
    with session_scope(factory) as session:
        cutoff = job.heartbeat_at - timedelta(seconds=1)
        assert jobs.list_abandoned(session=session, heartbeat_before=cutoff) == []


def test_a_job_lost_too_often_fails_with_the_last_reason(factory, job_id):
    for attempt in (1, 2):
        with session_scope(factory) as session:
            assert (
                jobs.claim(session=session, job_id=job_id, worker_host=f"w{attempt}", max_attempts=2).attempts
                == attempt
            )
        with session_scope(factory) as session:  # the worker died; the sweep queues the job again
            jobs.transition(
                session=session,
                job=jobs.get(session=session, job_id=job_id),
                new_status="queued",
                attempt=attempt,
                lost_reason=f"killed by signal 9 (attempt {attempt})",
            )
    with session_scope(factory) as session:
        assert jobs.claim(session=session, job_id=job_id, worker_host="w3", max_attempts=2) is None
    job = _get(factory, job_id)
    assert (job.status, job.attempts) == ("failed", 2)
    assert job.error == (
        "the worker died or was killed 2 times while running this job, so it is not run "
        "again; last: killed by signal 9 (attempt 2)"
    )


def test_a_redelivered_message_of_a_dead_run_counts_as_a_lost_attempt(factory, job_id):
    with session_scope(factory) as session:
        jobs.claim(session=session, job_id=job_id, worker_host="w1", max_attempts=1)
    with session_scope(factory) as session:  # still "running", heartbeat long gone: the broker redelivers
        assert jobs.claim(session=session, job_id=job_id, worker_host="w2", lease_s=0, max_attempts=1) is None
    job = _get(factory, job_id)
    assert job.status == "failed" and "died or was killed once" in job.error
    assert "stopped sending heartbeats" in job.error


def test_cancelling_a_queued_job_is_immediate_and_final(factory, job_id):
    with session_scope(factory) as session:
        job = jobs.request_cancel(session=session, job=jobs.get(session=session, job_id=job_id))
        assert job.status == "cancelled"
    with session_scope(factory) as session:
        assert jobs.claim(session=session, job_id=job_id, worker_host="w") is None
        with pytest.raises(InvalidTransition, match="already cancelled; there is nothing to cancel"):
            jobs.request_cancel(session=session, job=jobs.get(session=session, job_id=job_id))


def test_a_redelivered_job_with_a_cancel_request_ends_cancelled(factory, job_id):
    with session_scope(factory) as session:
        jobs.claim(session=session, job_id=job_id, worker_host="lost")
        jobs.request_cancel(session=session, job=jobs.get(session=session, job_id=job_id))
    with session_scope(factory) as session:
        assert jobs.claim(session=session, job_id=job_id, worker_host="next") is None
    assert _get(factory, job_id).status == "cancelled"


def test_worker_lost_goes_back_to_queued(factory, job_id):
    with session_scope(factory) as session:
        job = jobs.claim(session=session, job_id=job_id, worker_host="w")
        jobs.report_progress(session=session, job_id=job_id, progress=0.5)
        jobs.transition(session=session, job=job, new_status="queued")
        assert (job.status, job.progress, job.heartbeat_at) == ("queued", 0.0, None)
