"""Shards of sharded jobs: creation, exclusive claims, the job's counter (exactly one merger), progress."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from db.base import utcnow
from db.errors import StaleJob
from db.models import JobShard
from db.repositories import jobs, shards
from db.session import session_scope
from services.job_states import InvalidTransition
from tests.support.factories import add_job

RANGES = [(0, 16), (16, 32), (32, 40)]


@pytest.fixture
def job_id(factory) -> int:
    """A running job cut into three shards."""
    with session_scope(factory) as session:
        job = add_job(session)
        jobs.claim(session=session, job_id=job.id, worker_host="coordinator")
        shards.create(session=session, job=job, ranges=RANGES)
        return job.id


def _claim(factory, job_id, index, host="w", **options):
    with session_scope(factory) as session:
        claim = shards.claim(session=session, job_id=job_id, shard_index=index, worker_host=host, **options)
        return claim._replace(
            shard=None
        ) if claim.shard is None else claim, claim.shard and claim.shard.attempts


def _complete(factory, job_id, index, attempt=1, host="w"):
    with session_scope(factory) as session:
        shard = shards.get(session=session, job_id=job_id, shard_index=index)
        return shards.complete(
            session=session, shard=shard, attempt=attempt, worker_host=host, outcome_key="k" * 64, seconds=1.5
        )


def test_create_sets_the_counter_and_is_idempotent(factory, job_id):
    with session_scope(factory) as session:
        job = jobs.get(session=session, job_id=job_id)
        assert (job.shards_total, job.shards_done) == (3, 0)
        again = shards.create(session=session, job=job, ranges=RANGES)
        assert [(s.shard_index, s.sample_start, s.sample_stop, s.status) for s in again] == [
            (0, 0, 16, "queued"),
            (1, 16, 32, "queued"),
            (2, 32, 40, "queued"),
        ]
        with pytest.raises(StaleJob, match="other shards"):
            shards.create(session=session, job=job, ranges=[(0, 40)])


def test_claim_is_exclusive_under_a_lease_and_a_stale_shard_is_taken_over(factory, job_id):
    claim, attempt = _claim(factory, job_id, 0, "a", lease_s=60)
    assert attempt == 1
    claim, _ = _claim(factory, job_id, 0, "b", lease_s=60)
    assert claim.shard is None and 0 < claim.retry_after_s <= 61
    with session_scope(factory) as session:
        shard = shards.get(session=session, job_id=job_id, shard_index=0)
        shards.update(session=session, shard=shard, heartbeat_at=utcnow() - timedelta(seconds=120))
    _, attempt = _claim(factory, job_id, 0, "b", lease_s=60)
    assert attempt == 2
    with pytest.raises(StaleJob, match="attempt 2"):
        _complete(factory, job_id, 0, attempt=1)  # the first worker came back: it cannot finish the shard


def test_a_shard_lost_too_often_fails_the_job_with_the_reason(factory, job_id):
    for _ in range(2):
        with session_scope(factory) as session:
            claim = shards.claim(
                session=session, job_id=job_id, shard_index=1, worker_host="w", max_attempts=2
            )
            shards.transition(
                session=session, shard=claim.shard, new_status="queued", attempt=claim.shard.attempts
            )
    claim, _ = _claim(factory, job_id, 1, max_attempts=2)
    assert claim.failed_job.startswith("shard 1 (samples 16…31): the worker died or was killed 2 times")
    with session_scope(factory) as session:
        job = jobs.get(session=session, job_id=job_id)
        assert job.status == "failed" and job.error == claim.failed_job


def test_the_last_shard_to_finish_reads_the_total_and_takes_the_job_for_the_merge(factory, job_id):
    for index in range(3):
        _claim(factory, job_id, index, host=f"w{index}")
    assert _complete(factory, job_id, 2, host="w2") == (1, 3)
    assert not _complete(factory, job_id, 0, host="w0").last
    assert _complete(factory, job_id, 1, host="w1").last
    with session_scope(factory) as session:
        job = jobs.get(session=session, job_id=job_id)
        assert (job.shards_done, job.worker_host, job.status) == (3, "w1", "running")
        assert [s.status for s in shards.list(session=session, job_id=job_id)] == ["succeeded"] * 3
    with pytest.raises(InvalidTransition, match="already succeeded"):  # a shard cannot count itself twice
        _complete(factory, job_id, 1, host="w1")


def test_shards_finishing_together_give_exactly_one_merger(factory, engine):
    with session_scope(factory) as session:
        job = add_job(session)
        jobs.claim(session=session, job_id=job.id, worker_host="coordinator")
        ranges = [(8 * i, 8 * i + 8) for i in range(8)]
        shards.create(session=session, job=job, ranges=ranges)
        job_id = job.id
    for index in range(8):
        _claim(factory, job_id, index)
    with ThreadPoolExecutor(4) as pool:
        completions = list(
            pool.map(lambda index: _complete(factory, job_id, index, host=f"w{index}"), range(8))
        )
    assert sorted(c.done for c in completions) == list(range(1, 9))
    assert sum(c.last for c in completions) == 1


def test_a_cancelled_job_counts_no_shard_and_stops_the_claims(factory, job_id):
    _claim(factory, job_id, 0)
    with session_scope(factory) as session:
        jobs.request_cancel(session=session, job=jobs.get(session=session, job_id=job_id))
    with pytest.raises(StaleJob, match="not running"):
        _complete(factory, job_id, 0)
    claim, _ = _claim(factory, job_id, 1)
    assert claim == shards.ShardClaim()
    with session_scope(factory) as session:
        assert shards.get(session=session, job_id=job_id, shard_index=1).status == "cancelled"
        assert shards.get(session=session, job_id=job_id, shard_index=0).status == "running"  # not counted
        assert jobs.get(session=session, job_id=job_id).shards_done == 0


def test_progress_is_the_sum_over_shards_and_carries_the_cancel_flag(factory, job_id):
    _claim(factory, job_id, 0)
    _claim(factory, job_id, 2)
    with session_scope(factory) as session:
        first = shards.get(session=session, job_id=job_id, shard_index=0)
        last = shards.get(session=session, job_id=job_id, shard_index=2)
        assert not shards.report_progress(session=session, shard=first, attempt=1, progress=1.0).stop
        assert not shards.report_progress(session=session, shard=last, attempt=1, progress=0.5).stop
        assert shards.report_progress(session=session, shard=last, attempt=7, progress=0.5).lost
    with session_scope(factory) as session:
        job = jobs.get(session=session, job_id=job_id)
        assert job.progress == pytest.approx(shards.SWEEP_SHARE * (16 + 4) / 40)
        jobs.request_cancel(session=session, job=job)
    with session_scope(factory) as session:
        first = shards.get(session=session, job_id=job_id, shard_index=0)
        assert shards.report_progress(session=session, shard=first, attempt=1, progress=1.0).cancel_requested


def test_abandoned_shards_are_found_and_the_sharded_job_is_not(factory, job_id):
    _claim(factory, job_id, 0)
    old = utcnow() - timedelta(seconds=300)
    with session_scope(factory) as session:
        shards.update(
            session=session, shard=shards.get(session=session, job_id=job_id, shard_index=0), heartbeat_at=old
        )
        jobs.update(session=session, job=jobs.get(session=session, job_id=job_id), heartbeat_at=old)
    cutoff = utcnow() - timedelta(seconds=60)
    with session_scope(factory) as session:
        assert [s.shard_index for s in shards.list_abandoned(session=session, heartbeat_before=cutoff)] == [0]
        # its shards are recovered one by one: the job as a whole is not queued again while they run
        assert jobs.list_abandoned(session=session, heartbeat_before=cutoff) == []


def test_a_failed_shard_fails_its_job_with_its_error(factory, job_id):
    _claim(factory, job_id, 1)
    with session_scope(factory) as session:
        shard = shards.get(session=session, job_id=job_id, shard_index=1)
        assert shards.end_with_job(
            session=session, shard=shard, attempt=1, status="failed", error="shard 1: boom"
        )
    with session_scope(factory) as session:
        job = jobs.get(session=session, job_id=job_id)
        assert (job.status, job.error) == ("failed", "shard 1: boom")
        assert isinstance(shards.get(session=session, job_id=job_id, shard_index=1), JobShard)
