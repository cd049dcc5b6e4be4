"""Webhooks: a local HTTP server receives the summary; a dead webhook is retried with backoff, then failed;
each attempt is claimed once; any error is a recorded attempt; private targets are refused at delivery."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from types import SimpleNamespace

import httpx
import pytest

from db import repositories as repo
from db.base import utcnow
from db.session import session_scope
from services import webhook_targets
from tests.support.builders import add_digits
from tests.support.webhook_server import WebhookReceiver, refusing_endpoint
from worker import audits as audit_tasks
from worker import webhooks
from worker.webhooks import WebhookSettings, attempt_delivery

# Tests POST to a server on 127.0.0.1, which only ADVAUDIT_WEBHOOK_ALLOW_PRIVATE=true allows.
FAST = WebhookSettings(
    max_attempts=3, backoff_s=0.5, timeout_s=2.0, public_url="https://advaudit.example", allow_private=True
)
GUARDED = WebhookSettings(max_attempts=3, backoff_s=0.5, timeout_s=2.0)
ROWS = [
    {
        "metric": "accuracy",
        "eps": 8 / 255,
        "baseline": 49.2,
        "candidate": 30.6,
        "delta": -18.6,
        "threshold": 5.0,
        "unit": "pp",
        "direction": "drop",
        "regressed": True,
    },
    {
        "metric": "clean_accuracy",
        "eps": None,
        "baseline": 98.3,
        "candidate": 98.9,
        "delta": 0.6,
        "threshold": 2.0,
        "unit": "pp",
        "direction": "drop",
        "regressed": False,
    },
]


class Clock:
    """The delivery's clock, moved by hand: backoffs pass without sleeping."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(webhooks, "utcnow", clock)
    return clock


def finished_run(sessions, url: str) -> int:
    """A regressed run of an audit whose webhook is `url`, waiting for delivery."""
    with session_scope(sessions) as session:
        audit = repo.audits.create(
            session=session,
            name="nightly",
            dataset_id=add_digits(session).id,
            config={},
            thresholds={},
            model_name="digits-net",
            webhook_url=url,
        )
        run = repo.audits.create_run(session=session, audit=audit, slot="manual:1", trigger="manual")
        candidate = {
            "job_id": 7,
            "run_id": run.id,
            "model_id": 2,
            "model_name": "digits-net",
            "model_version": "v2",
            "clean_accuracy": 0.989,
            "robust_auc": 0.69,
        }
        baseline = {**candidate, "job_id": 5, "run_id": None, "model_id": 1, "model_version": "v1"}
        repo.audits.transition_run(
            session=session,
            run_id=run.id,
            from_status="pending",
            to_status="finished",
            verdict="regressed",
            reason="1 metric(s) regressed",
            finished_at=utcnow(),
            webhook_status="pending",
            result={
                "comparisons": [
                    {
                        "candidate": candidate,
                        "baseline": baseline,
                        "rows": ROWS,
                        "regressed": True,
                        "warnings": [],
                    }
                ],
                "errors": [],
            },
        )
        return run.id


def delivery(sessions, run_id: int) -> tuple:
    with session_scope(sessions) as session:
        run = repo.audits.get_run(session=session, run_id=run_id)
        return run.webhook_status, run.webhook_attempts, run.webhook_error, run.verdict


def test_the_summary_is_posted_after_a_failed_attempt(sessions, clock):
    with WebhookReceiver(statuses=[503], answer=b"stack trace with internal secrets") as receiver:
        run_id = finished_run(sessions, receiver.url)
        first = attempt_delivery(run_id, sessions, FAST)
        assert (first.status, first.attempts, first.retry_in_s) == ("pending", 1, 0.5)
        # the status and its reason only: a receiver's answer may echo anything
        assert first.error == "HTTP 503 Service Unavailable"
        clock.advance(0.5)
        second = attempt_delivery(run_id, sessions, FAST)
        assert (second.status, second.attempts, second.retry_in_s) == ("delivered", 2, None)
        assert (
            attempt_delivery(run_id, sessions, FAST).status is None
        )  # delivered: a redelivered task is a no-op
    body = receiver.bodies[-1]
    assert len(receiver.bodies) == 2 and receiver.headers[-1]["User-Agent"].startswith("advaudit")
    assert body["event"] == "audit.run.finished" and body["run"]["verdict"] == "regressed"
    assert body["run"]["url"] == f"https://advaudit.example/api/v1/audits/{body['audit']['id']}/runs/{run_id}"
    assert body["regressions"] == [
        {
            "model_name": "digits-net",
            "model_version": "v2",
            "candidate_job_id": 7,
            "baseline_job_id": 5,
            **ROWS[0],
        }
    ]
    # one delivery id for every attempt: what a receiver deduplicates on (delivery is at-least-once)
    assert [b["delivery"] for b in receiver.bodies] == [
        {"id": f"advaudit-audit-run-{run_id}", "attempt": 1},
        {"id": f"advaudit-audit-run-{run_id}", "attempt": 2},
    ]
    assert {h["Idempotency-Key"] for h in receiver.headers} == {f"advaudit-audit-run-{run_id}"}
    assert delivery(sessions, run_id) == ("delivered", 2, None, "regressed")


def test_a_dead_webhook_is_retried_with_doubling_backoff_then_recorded_as_failed(sessions, clock):
    with WebhookReceiver(default_status=503) as receiver:
        run_id = finished_run(sessions, receiver.url)
        attempts = []
        for _ in range(3):
            attempts.append(attempt_delivery(run_id, sessions, FAST))
            clock.advance(attempts[-1].retry_in_s or 0)
        assert attempt_delivery(run_id, sessions, FAST).status is None
    assert [(a.status, a.retry_in_s) for a in attempts] == [
        ("pending", 0.5),
        ("pending", 1.0),
        ("failed", None),
    ]
    assert len(receiver.bodies) == 3
    assert delivery(sessions, run_id) == ("failed", 3, "HTTP 503 Service Unavailable", "regressed")


def test_a_refused_connection_is_a_failed_attempt(sessions, clock):
    with refusing_endpoint() as url:
        run_id = finished_run(sessions, url)
        attempt = attempt_delivery(run_id, sessions, FAST)
    assert (attempt.status, attempt.retry_in_s) == ("pending", 0.5) and attempt.error.startswith(
        "ConnectError"
    )


def test_any_error_is_a_recorded_attempt_never_a_stuck_delivery(sessions, clock, monkeypatch):
    run_id = finished_run(sessions, "http://a..b/hook")  # stored before URLs were validated
    attempt = attempt_delivery(run_id, sessions, FAST)
    assert (attempt.status, attempt.attempts) == ("pending", 1)
    assert attempt.error.startswith("refused: webhook_url 'http://a..b/hook' has an invalid host name")
    with session_scope(sessions) as session:
        run = repo.audits.get_run(session=session, run_id=run_id)
        run.audit.webhook_url = "http://hooks.example.com/x"

    def explode(*args, **kwargs):
        raise UnicodeError("encoding with 'idna' codec failed")

    monkeypatch.setattr(httpx.Client, "post", explode)
    clock.advance(0.5)
    attempt = attempt_delivery(run_id, sessions, FAST)
    assert (attempt.status, attempt.attempts, attempt.retry_in_s) == ("pending", 2, 1.0)
    assert attempt.error.startswith("UnicodeError: encoding with 'idna'")
    assert delivery(sessions, run_id)[:3] == ("pending", 2, attempt.error)


def test_a_duplicate_message_never_posts_the_same_attempt_twice(sessions, clock, monkeypatch):
    duplicates = []
    post = webhooks._post

    def post_while_a_duplicate_arrives(url, body, settings):
        duplicates.append(
            attempt_delivery(run_id, sessions, FAST)
        )  # e.g. the tick's re-send, or a redelivery
        return post(url, body, settings)

    with WebhookReceiver(statuses=[503]) as receiver:
        run_id = finished_run(sessions, receiver.url)
        monkeypatch.setattr(webhooks, "_post", post_while_a_duplicate_arrives)
        assert attempt_delivery(run_id, sessions, FAST).status == "pending"
        monkeypatch.setattr(webhooks, "_post", post)
        assert len(receiver.bodies) == 1 and duplicates[0].status is None
        clock.advance(0.2)  # a duplicate before the backoff has passed: it leaves the attempt to the retry
        assert attempt_delivery(run_id, sessions, FAST).status is None and len(receiver.bodies) == 1
        clock.advance(0.3)
        assert attempt_delivery(run_id, sessions, FAST).status == "delivered" and len(receiver.bodies) == 2


def test_an_interrupted_last_attempt_ends_the_delivery_as_failed(sessions, clock):
    run_id = finished_run(sessions, "http://hooks.example.com/x")
    with session_scope(sessions) as session:  # its worker died during the third POST
        run = repo.audits.get_run(session=session, run_id=run_id)
        repo.audits.update_run(session=session, run=run, webhook_attempts=3, webhook_at=clock.now)
    clock.advance(600)
    attempt = attempt_delivery(run_id, sessions, FAST)
    assert attempt.status == "failed" and "gave up after 3 attempts" in attempt.error


def test_private_targets_are_refused_at_delivery_unless_allowed(sessions, clock, monkeypatch):
    with WebhookReceiver() as receiver:
        run_id = finished_run(sessions, receiver.url)
        attempt = attempt_delivery(run_id, sessions, GUARDED)
        assert attempt.error.startswith("refused: webhook host 127.0.0.1 is a loopback address")
        # a name that resolved to a public address when the audit was saved, and to a private one now
        with session_scope(sessions) as session:
            repo.audits.get_run(
                session=session, run_id=run_id
            ).audit.webhook_url = f"http://hooks.test:{receiver.port}/hook"
        monkeypatch.setattr(webhook_targets, "resolve", lambda host, port: [ipaddress.ip_address("10.1.2.3")])
        clock.advance(0.5)
        attempt = attempt_delivery(run_id, sessions, GUARDED)
        assert "hooks.test resolves to 10.1.2.3, which is a private address" in attempt.error
    assert receiver.bodies == []


def test_the_post_goes_to_the_address_that_was_checked(sessions, clock, monkeypatch):
    """The checked address is the one connected to: a DNS answer changing after the check cannot redirect it."""
    answers = iter([[ipaddress.ip_address("127.0.0.1")], [ipaddress.ip_address("10.9.9.9")]])
    monkeypatch.setattr(webhook_targets, "resolve", lambda host, port: next(answers))
    monkeypatch.setattr(
        webhook_targets, "address_problem", lambda address: None
    )  # let 127.0.0.1 count as public
    with WebhookReceiver() as receiver:
        run_id = finished_run(sessions, f"http://hooks.test:{receiver.port}/hook")
        assert attempt_delivery(run_id, sessions, GUARDED).status == "delivered"
    assert receiver.headers[0]["Host"] == f"hooks.test:{receiver.port}"


def test_the_task_schedules_each_retry_after_the_backoff(sessions, clock, monkeypatch):
    with WebhookReceiver(default_status=503) as receiver:
        run_id = finished_run(sessions, receiver.url)
        monkeypatch.setattr(audit_tasks, "audit_context", lambda: SimpleNamespace(sessions=sessions))
        monkeypatch.setattr(audit_tasks, "webhook_settings", lambda: FAST)
        countdowns = []

        class Retry(Exception):
            pass

        def retry(countdown):
            countdowns.append(countdown)
            clock.advance(countdown)  # the retry message arrives after its countdown
            return Retry()

        monkeypatch.setattr(audit_tasks.deliver_webhook, "retry", retry)
        for _ in range(2):
            with pytest.raises(Retry):
                audit_tasks.deliver_webhook(run_id)
        assert audit_tasks.deliver_webhook(run_id) == "failed"
    assert countdowns == [0.5, 1.0]
