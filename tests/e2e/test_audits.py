"""Regression audits end to end: PostgreSQL, Redis, and a real Celery worker with beat embedded.

Beat ticks every second; runs are created by the tick (schedule), by the new-version trigger and by the
launch task sent by name (run now); jobs run in the worker, the evaluate task hands finished runs to
finalize, and webhooks reach a local HTTP server (or fail after their retries).
"""

from __future__ import annotations

import sys
import uuid
from datetime import timedelta

import pytest

from api.services.audit_runs import record_new_version
from contracts.tasks import Queue, Task
from db import repositories as repo
from db.base import utcnow
from db.session import session_scope
from services.audit_schedule import Schedule, slot_key
from tests.support.builders import add_digits
from tests.support.service_harness import Worker, wait_for
from tests.support.webhook_server import WebhookReceiver, refusing_endpoint
from tests.support.worker_audits import add_audit, add_version, regressed_metrics

pytestmark = pytest.mark.timeout(240)

# The webhook receiver listens on 127.0.0.1, a target only ADVAUDIT_WEBHOOK_ALLOW_PRIVATE allows.
AUDIT_SETTINGS = {
    "ADVAUDIT_AUDIT_TICK_S": "1",
    "ADVAUDIT_WEBHOOK_MAX_ATTEMPTS": "3",
    "ADVAUDIT_WEBHOOK_BACKOFF_S": "0.2",
    "ADVAUDIT_WEBHOOK_TIMEOUT_S": "2",
    "ADVAUDIT_WEBHOOK_ALLOW_PRIVATE": "true",
}
RUN_DEADLINE_S = 90


@pytest.fixture(scope="module")
def worker(service) -> Worker:
    """One worker consuming the control queue (audit tasks) and the default one (their jobs), with beat embedded
    as `advaudit serve` does."""
    service.queue = Queue.EVALUATIONS
    name = f"audits-{uuid.uuid4().hex[:6]}@advaudit-test"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.tasks",
        "worker",
        "--loglevel=INFO",
        "--concurrency=1",
        "--pool=prefork",
        "-Q",
        f"{Queue.CONTROL},{Queue.EVALUATIONS}",
        f"--hostname={name}",
        "--without-mingle",
        "--without-gossip",
        "--beat",
        f"--schedule={service.root / 'beat-schedule'}",
    ]
    started = Worker(name, command, service.environment() | AUDIT_SETTINGS, service.root / "audits.log")
    service.workers.append(started)
    return started.wait_ready()


@pytest.fixture(scope="module")
def inputs(service) -> dict[str, int]:
    with session_scope(service.sessions) as session:
        return {"digits": add_digits(session).id, "v1": add_version(session, service.store, "gap-cnn")}


def runs_of(service, audit_id: int) -> list:
    with session_scope(service.sessions) as session:
        return list(repo.audits.list_runs(session=session, audit_id=audit_id))


def wait_for_run(service, worker, audit_id: int, done, what: str):
    """The first run of the audit (oldest first) for which `done(run)` holds."""

    def found():
        return next((run for run in reversed(runs_of(service, audit_id)) if done(run)), None)

    return wait_for(
        found,
        RUN_DEADLINE_S,
        what,
        lambda: "\n".join(
            [f"run {r.id} {r.trigger} {r.status} {r.verdict} {r.reason}" for r in runs_of(service, audit_id)]
            + [worker.log_tail(40)]
        ),
        interval_s=0.3,
    )


def test_scheduled_and_new_version_runs_reach_their_verdicts_and_webhooks(service, worker, inputs):
    with WebhookReceiver() as receiver:
        with session_scope(service.sessions) as session:
            # hourly, and started two hours ago: its latest slot is due at the very next tick
            audit_id = add_audit(
                session,
                inputs["digits"],
                name="e2e",
                interval_s=3600,
                run_on_new_version=True,
                webhook_url=receiver.url,
                schedule_from=utcnow() - timedelta(hours=2),
            ).id
        started = utcnow()
        first = wait_for_run(service, worker, audit_id, lambda r: r.verdict is not None, "the scheduled run")
        assert (first.trigger, first.verdict) == ("schedule", "baseline"), first.reason
        due = Schedule.build(cron=None, interval_s=3600, timezone=None).latest_slot(started)
        assert first.slot in (slot_key(due), slot_key(due + timedelta(hours=1)))

        with session_scope(service.sessions) as session:
            fragile = repo.models.get(
                session=session, model_id=add_version(session, service.store, "gap-cnn-fragile")
            )
            record_new_version(session=session, model=fragile)  # what POST /models does
        second = wait_for_run(
            service,
            worker,
            audit_id,
            lambda r: r.trigger == "new_version" and r.verdict,
            "the new-version run",
        )
        assert second.verdict == "regressed", second.reason
        assert {("robust_auc", None), ("accuracy", 8)} <= regressed_metrics(second)
        wait_for(lambda: len(receiver.bodies) >= 2, 30, "two webhook deliveries", worker.log_tail)
    verdicts = {body["run"]["id"]: body["run"]["verdict"] for body in receiver.bodies}
    assert verdicts[first.id] == "baseline" and verdicts[second.id] == "regressed"
    regression = next(body for body in receiver.bodies if body["run"]["id"] == second.id)["regressions"]
    assert {row["metric"] for row in regression} >= {"robust_auc", "accuracy"}
    runs = runs_of(service, audit_id)
    assert all(
        run.webhook_status == "delivered" and run.webhook_attempts == 1
        for run in runs
        if run.id in (first.id, second.id)
    )
    scheduled = [run.slot for run in runs if run.trigger == "schedule"]
    assert len(scheduled) == len(set(scheduled)) <= 2  # a tick every second, yet one run per slot


def test_run_now_through_the_launch_task_and_a_dead_webhook(service, worker, inputs):
    with refusing_endpoint() as dead_url:
        with session_scope(service.sessions) as session:
            audit = add_audit(
                session,
                inputs["digits"],
                name="dead-hook",
                model_name=None,
                model_ids=[inputs["v1"]],
                webhook_url=dead_url,
            )
            run_id = repo.audits.create_run(
                session=session, audit=audit, slot="manual:e2e", trigger="manual"
            ).id
            audit_id = audit.id
        service.client.send_task(Task.AUDIT_LAUNCH, args=[run_id], queue=Queue.CONTROL)  # as the API does
        run = wait_for_run(
            service, worker, audit_id, lambda r: r.webhook_status == "failed", "the webhook to fail"
        )
    assert run.id == run_id and run.verdict == "baseline"  # a dead webhook never changes the verdict
    assert run.webhook_attempts == 3 and "ConnectError" in run.webhook_error
