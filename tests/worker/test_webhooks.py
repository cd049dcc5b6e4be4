"""Webhooks: a local HTTP server receives the summary; a dead webhook is retried with backoff, then failed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from db import repositories as repo
from db.base import utcnow
from db.session import session_scope
from tests.conftest import free_port
from tests.worker.builders import add_digits
from tests.worker.webhook_server import WebhookReceiver
from worker import audits as audit_tasks
from worker.webhooks import WebhookSettings, attempt_delivery

FAST = WebhookSettings(max_attempts=3, backoff_s=0.5, timeout_s=2.0, public_url="https://advaudit.example")
ROWS = [{"metric": "accuracy", "eps": 8 / 255, "baseline": 49.2, "candidate": 30.6, "delta": -18.6,
         "threshold": 5.0, "unit": "pp", "direction": "drop", "regressed": True},
        {"metric": "clean_accuracy", "eps": None, "baseline": 98.3, "candidate": 98.9, "delta": 0.6,
         "threshold": 2.0, "unit": "pp", "direction": "drop", "regressed": False}]


def finished_run(sessions, url: str) -> int:
    """A regressed run of an audit whose webhook is `url`, waiting for delivery."""
    with session_scope(sessions) as session:
        audit = repo.audits.create(session=session, name="nightly", dataset_id=add_digits(session).id, config={},
                                   thresholds={}, model_name="digits-net", webhook_url=url)
        run = repo.audits.create_run(session=session, audit=audit, slot="manual:1", trigger="manual")
        candidate = {"job_id": 7, "run_id": run.id, "model_id": 2, "model_name": "digits-net", "model_version": "v2",
                     "clean_accuracy": 0.989, "robust_auc": 0.69}
        baseline = {**candidate, "job_id": 5, "run_id": None, "model_id": 1, "model_version": "v1"}
        repo.audits.transition_run(session=session, run_id=run.id, from_status="pending", to_status="finished",
                                   verdict="regressed", reason="1 metric(s) regressed", finished_at=utcnow(),
                                   webhook_status="pending", result={"comparisons": [
                                       {"candidate": candidate, "baseline": baseline, "rows": ROWS,
                                        "regressed": True, "warnings": []}], "errors": []})
        return run.id


def test_the_summary_is_posted_after_a_failed_attempt(sessions):
    with WebhookReceiver(statuses=[503]) as receiver:
        run_id = finished_run(sessions, receiver.url)
        first = attempt_delivery(run_id, sessions, FAST)
        assert (first.status, first.attempts, first.retry_in_s) == ("pending", 1, 0.5)
        assert first.error.startswith("HTTP 503")
        second = attempt_delivery(run_id, sessions, FAST)
        assert (second.status, second.attempts, second.retry_in_s) == ("delivered", 2, None)
        assert attempt_delivery(run_id, sessions, FAST).status is None  # delivered: a redelivered task is a no-op
    body = receiver.bodies[-1]
    assert len(receiver.bodies) == 2 and receiver.headers[-1]["User-Agent"].startswith("advaudit")
    assert body["event"] == "audit.run.finished" and body["run"]["verdict"] == "regressed"
    assert body["run"]["url"] == f"https://advaudit.example/api/v1/audits/{body['audit']['id']}/runs/{run_id}"
    assert body["regressions"] == [{"model_name": "digits-net", "model_version": "v2", "candidate_job_id": 7,
                                    "baseline_job_id": 5, **ROWS[0]}]
    with session_scope(sessions) as session:
        run = repo.audits.get_run(session=session, run_id=run_id)
        assert (run.webhook_status, run.webhook_attempts, run.webhook_error) == ("delivered", 2, None)
        assert run.verdict == "regressed"


def test_a_dead_webhook_is_retried_with_doubling_backoff_then_recorded_as_failed(sessions):
    run_id = finished_run(sessions, f"http://127.0.0.1:{free_port()}/hook")
    attempts = [attempt_delivery(run_id, sessions, FAST) for _ in range(3)]
    assert [(a.status, a.retry_in_s) for a in attempts] == [("pending", 0.5), ("pending", 1.0), ("failed", None)]
    assert attempt_delivery(run_id, sessions, FAST).status is None
    with session_scope(sessions) as session:
        run = repo.audits.get_run(session=session, run_id=run_id)
        assert (run.webhook_status, run.webhook_attempts) == ("failed", 3)
        assert "ConnectError" in run.webhook_error and run.verdict == "regressed"  # the verdict is untouched


def test_the_task_schedules_each_retry_after_the_backoff(sessions, monkeypatch):
    run_id = finished_run(sessions, f"http://127.0.0.1:{free_port()}/hook")

    monkeypatch.setattr(audit_tasks, "audit_context", lambda: SimpleNamespace(sessions=sessions))
    monkeypatch.setattr(audit_tasks, "webhook_settings", lambda: FAST)
    countdowns = []

    class Retry(Exception):
        pass

    def retry(countdown):
        countdowns.append(countdown)
        return Retry()

    monkeypatch.setattr(audit_tasks.deliver_webhook, "retry", retry)
    for _ in range(2):
        with pytest.raises(Retry):
            audit_tasks.deliver_webhook(run_id)
    assert audit_tasks.deliver_webhook(run_id) == "failed"
    assert countdowns == [0.5, 1.0]
