"""Transfer jobs in the database: models by role, claims and transitions, points, RESTRICT on models."""

from __future__ import annotations

from datetime import timedelta

import pytest

from db.base import utcnow
from db.errors import RecordInUse, StaleJob
from db.repositories import datasets, models, transfers
from db.session import session_scope
from services.job_states import InvalidTransition
from tests.support.factories import add_dataset, add_model


@pytest.fixture
def ids(factory) -> dict[str, int]:
    with session_scope(factory) as session:
        a, b = add_model(session, "a", "wa"), add_model(session, "b", "wb")
        dataset = add_dataset(session)
        job = transfers.create(
            session=session,
            dataset_id=dataset.id,
            source_ids=[a.id, b.id],
            target_ids=[b.id],
            config={"eps": [0.0, 0.1]},
            queue="evaluations",
        )
        return {"a": a.id, "b": b.id, "dataset": dataset.id, "job": job.id}


def _point(source, target, attack="fgsm", eps=0.1, accuracy=0.5):
    return {
        "source_model_id": source,
        "target_model_id": target,
        "attack": attack,
        "eps": eps,
        "accuracy": accuracy,
        "success_rate": 0.25,
        "n": 8,
    }


def test_create_keeps_the_roles_in_order(factory, ids):
    with session_scope(factory) as session:
        job = transfers.get(session=session, transfer_id=ids["job"])
        assert job.model_ids("source") == [ids["a"], ids["b"]]
        assert job.model_ids("target") == [ids["b"]]
        assert (job.status, job.progress, job.attempts, job.queue) == ("queued", 0.0, 0, "evaluations")
        assert transfers.count(session=session, model_id=ids["a"]) == 1
        assert transfers.count(session=session, model_id=ids["a"] + 100) == 0
        assert [j.id for j in transfers.list(session=session, dataset_id=ids["dataset"])] == [ids["job"]]


def test_claim_is_exclusive_and_fenced_by_attempt(factory, ids):
    with session_scope(factory) as session:
        job = transfers.claim(session=session, transfer_id=ids["job"], worker_host="w1", lease_s=60)
        assert (job.status, job.attempts, job.worker_host) == ("running", 1, "w1")
    with session_scope(factory) as session:  # a live lease: nobody else gets it
        assert transfers.claim(session=session, transfer_id=ids["job"], worker_host="w2", lease_s=60) is None
    with session_scope(factory) as session:  # the lease ran out: taken over, attempt 2
        job = transfers.get(session=session, transfer_id=ids["job"])
        job.heartbeat_at = utcnow() - timedelta(seconds=120)
        session.flush()
        job = transfers.claim(session=session, transfer_id=ids["job"], worker_host="w2", lease_s=60)
        assert job.attempts == 2
    with session_scope(factory) as session, pytest.raises(StaleJob):
        job = transfers.get(session=session, transfer_id=ids["job"])
        transfers.transition(session=session, transfer_job=job, new_status="succeeded", attempt=1)
    with session_scope(factory) as session:
        answer = transfers.report_progress(session=session, transfer_id=ids["job"], progress=0.5, attempt=1)
        assert answer.lost
        answer = transfers.report_progress(session=session, transfer_id=ids["job"], progress=0.5, attempt=2)
        assert not answer.lost and not answer.cancel_requested


def test_transitions_follow_the_table(factory, ids):
    with session_scope(factory) as session:
        job = transfers.get(session=session, transfer_id=ids["job"])
        with pytest.raises(InvalidTransition, match="a queued job cannot become succeeded"):
            transfers.transition(session=session, transfer_job=job, new_status="succeeded")
        transfers.claim(session=session, transfer_id=ids["job"], worker_host="w")
        transfers.transition(session=session, transfer_job=job, new_status="succeeded", attempt=1)
        assert (job.status, job.progress) == ("succeeded", 1.0) and job.finished_at is not None
        with pytest.raises(InvalidTransition, match="already succeeded"):
            transfers.request_cancel(session=session, transfer_job=job)


def test_cancel_queued_now_and_running_by_flag(factory, ids):
    with session_scope(factory) as session:
        job = transfers.get(session=session, transfer_id=ids["job"])
        transfers.claim(session=session, transfer_id=ids["job"], worker_host="w")
        transfers.request_cancel(session=session, transfer_job=job)
        assert (job.status, job.cancel_requested) == ("running", True)
        answer = transfers.report_progress(session=session, transfer_id=ids["job"], progress=0.2, attempt=1)
        assert answer.cancel_requested and answer.stop
    with session_scope(factory) as session:
        dataset_id = ids["dataset"]
        other = transfers.create(
            session=session, dataset_id=dataset_id, source_ids=[ids["a"]], target_ids=[ids["b"]], config={}
        )
        transfers.request_cancel(session=session, transfer_job=other)
        assert other.status == "cancelled"


def test_points_are_replaced_not_duplicated(factory, ids):
    points = [_point(ids["a"], ids["b"]), _point(None, ids["b"], "all", accuracy=0.25)]
    for _ in range(2):  # a redelivered task writes the same matrix again
        with session_scope(factory) as session:
            job = transfers.get(session=session, transfer_id=ids["job"])
            transfers.replace_points(session=session, transfer_job=job, points=points)
    with session_scope(factory) as session:
        job = transfers.get(session=session, transfer_id=ids["job"])
        assert [(p.source_model_id, p.attack, p.accuracy) for p in job.points] == [
            (ids["a"], "fgsm", 0.5),
            (None, "all", 0.25),
        ]


def test_worst_points_come_from_the_newest_succeeded_job(factory, ids):
    with session_scope(factory) as session:
        job = transfers.get(session=session, transfer_id=ids["job"])
        transfers.replace_points(session=session, transfer_job=job, points=[_point(None, ids["b"], "all")])
        assert transfers.worst_points(session=session, target_ids=[ids["b"]]) == []  # not succeeded yet
        transfers.claim(session=session, transfer_id=job.id, worker_host="w")
        transfers.transition(session=session, transfer_job=job, new_status="succeeded", attempt=1)
        newer = transfers.create(
            session=session,
            dataset_id=ids["dataset"],
            source_ids=[ids["a"]],
            target_ids=[ids["b"]],
            config={},
        )
        transfers.replace_points(
            session=session, transfer_job=newer, points=[_point(None, ids["b"], "all", accuracy=0.125)]
        )
        transfers.claim(session=session, transfer_id=newer.id, worker_host="w")
        transfers.transition(session=session, transfer_job=newer, new_status="succeeded", attempt=1)
        worst = transfers.worst_points(session=session, target_ids=[ids["b"], ids["a"]])
        assert [(p.transfer_job_id, p.accuracy) for p in worst] == [(newer.id, 0.125)]


def test_a_model_or_dataset_in_a_transfer_job_cannot_be_deleted(factory, ids):
    with session_scope(factory) as session:
        model = models.get(session=session, model_id=ids["a"])
        with pytest.raises(RecordInUse, match="used by 1 transfer job"):
            models.delete(session=session, model=model)
        dataset = datasets.get(session=session, dataset_id=ids["dataset"])
        with pytest.raises(RecordInUse, match="used by 1 transfer job"):
            datasets.delete(session=session, dataset=dataset)
    with session_scope(factory) as session:
        transfers.delete(session=session, transfer_job=transfers.get(session=session, transfer_id=ids["job"]))
    with session_scope(factory) as session:
        models.delete(session=session, model=models.get(session=session, model_id=ids["a"]))
        assert models.get(session=session, model_id=ids["a"]) is None
