"""The Celery app's settings per broker, the task's registration and its retry of a leased job."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contracts.settings import Settings, clear_settings_cache
from contracts.tasks import CONTROL_TASKS, Queue, Task
from db.session import session_scope
from worker import celery_app
from worker.celery_app import broker_transport_options, make_celery


@pytest.fixture
def settings_env(monkeypatch, tmp_path) -> Iterator[None]:
    """Settings read from a clean ADVAUDIT_* environment under tmp_path."""
    for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "ARTIFACT_ROOT", "VISIBILITY_TIMEOUT_S"):
        monkeypatch.delenv(f"ADVAUDIT_{name}", raising=False)
    monkeypatch.setenv("ADVAUDIT_DATA_DIR", str(tmp_path / "data"))
    clear_settings_cache()
    yield
    clear_settings_cache()


def test_redis_redelivers_within_the_visibility_timeout():
    options = broker_transport_options(
        Settings(broker_url="redis://127.0.0.1:6379/3", visibility_timeout_s=10)
    )
    assert options == {"visibility_timeout": 10, "unacked_restore_interval": 2, "unacked_restore_throttle": 1}
    default = broker_transport_options(Settings(broker_url="redis://redis:6379/0"))
    assert default["visibility_timeout"] == 900 and default["unacked_restore_interval"] == 10
    assert Settings().visibility_timeout_s > Settings().job_lease_s  # a live job keeps its worker


def test_the_embedded_broker_waits_for_a_busy_database_instead_of_redis_options(tmp_path):
    options = broker_transport_options(Settings(data_dir=tmp_path))  # sqla+sqlite, the embedded broker
    assert options == {"connect_args": {"timeout": 30.0}}
    assert broker_transport_options(Settings(broker_url="amqp://guest@127.0.0.1//")) == {}


def test_the_app_acknowledges_late_and_prefetches_one(settings_env, monkeypatch):
    monkeypatch.setenv("ADVAUDIT_BROKER_URL", "redis://127.0.0.1:6379/9")
    conf = make_celery().conf
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost, conf.worker_prefetch_multiplier) == (
        True,
        True,
        1,
    )
    assert conf.broker_transport_options["unacked_restore_throttle"] == 1


def test_the_embedded_sqlite_broker_carries_a_task(settings_env):
    """Regression: Redis-only transport options made kombu's SQLAlchemy transport fail every publish."""
    app = make_celery()
    app.send_task(Task.EVALUATE, args=[7], queue=Queue.EVALUATIONS)
    with app.connection_for_read() as connection:
        message = connection.SimpleQueue(Queue.EVALUATIONS).get(timeout=10)
        assert message.headers["task"] == Task.EVALUATE and message.payload[0] == [7]
        message.ack()


def test_the_evaluate_task_is_registered_and_retries_a_leased_job(sessions, context, demo_ids, monkeypatch):
    from db import repositories as repo
    from worker import tasks

    assert Task.EVALUATE in celery_app.app.tasks and tasks.evaluate.name == Task.EVALUATE
    with session_scope(sessions) as session:
        job_id = repo.jobs.create(session=session, model_id=demo_ids[0], dataset_id=demo_ids[1], config={}).id
        repo.jobs.claim(session=session, job_id=job_id, worker_host="busy-worker", lease_s=context.lease_s)
    retries = []

    class Retry(Exception):
        pass

    def retry(**kwargs):
        retries.append(kwargs)
        return Retry()

    monkeypatch.setattr(tasks, "worker_context", lambda: context)
    monkeypatch.setattr(tasks.evaluate, "retry", retry)
    with pytest.raises(Retry):
        tasks.evaluate(job_id)
    assert len(retries) == 1 and 1.0 <= retries[0]["countdown"] <= context.lease_s + 1.0


def test_bookkeeping_has_a_queue_of_its_own(settings_env):
    """Ticks, launches, verdicts, webhooks and the requeue sweep never wait behind queued evaluations."""
    app = make_celery()
    schedule = app.conf.beat_schedule
    assert {entry["options"]["queue"] for entry in schedule.values()} == {Queue.CONTROL}
    assert Task.REQUEUE_ABANDONED in CONTROL_TASKS and {entry["task"] for entry in schedule.values()} <= set(
        CONTROL_TASKS
    )
    for name in CONTROL_TASKS:  # also when a sender names no queue
        assert app.amqp.router.route({}, name)["queue"].name == Queue.CONTROL
    assert app.amqp.router.route({}, Task.EVALUATE)["queue"].name == Queue.EVALUATIONS
    assert Queue.CONTROL != Queue.EVALUATIONS
