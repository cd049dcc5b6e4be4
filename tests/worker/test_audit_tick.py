"""The scheduler tick with a controlled clock: due slots, duplicate ticks, catch-up, changes without restart."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from db import repositories as repo
from db.session import session_scope
from tests.support.builders import add_digits
from tests.support.worker_audits import (
    InlineQueue,
    add_audit,
    add_version,
    audit_context,
    manual_run,
    run_state,
)
from worker.audit_runs import launch_run
from worker.audit_tick import tick
from worker.webhooks import WebhookSettings

pytestmark = pytest.mark.timeout(120)

CREATED = datetime(2025, 11, 25, 12, 0, tzinfo=UTC)  # the audits below exist from this instant


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2025, 11, day, hour, minute, second, tzinfo=UTC)


@pytest.fixture
def queue(context) -> InlineQueue:
    return InlineQueue(context)


@pytest.fixture
def audit_ctx(context, queue):
    return audit_context(context, queue)


@pytest.fixture
def audit_id(sessions, store) -> int:
    """A daily 03:00 UTC audit of digits-net v1 (gap-cnn), created on 2025-11-25 at 12:00."""
    with session_scope(sessions) as session:
        add_version(session, store, "gap-cnn")
        return add_audit(
            session, add_digits(session).id, cron="0 3 * * *", timezone="UTC", schedule_from=CREATED
        ).id


def slots(sessions, audit_id: int) -> list[str]:
    with session_scope(sessions) as session:
        return sorted(run.slot for run in repo.audits.list_runs(session=session, audit_id=audit_id))


def finish_all(queue: InlineQueue, audit_ctx, now: datetime) -> None:
    """Run the queued jobs; the next tick then finalizes their runs."""
    queue.run_jobs()
    tick(audit_ctx, now)


def test_a_due_slot_runs_once_however_often_the_tick_comes(sessions, audit_ctx, queue, audit_id):
    assert tick(audit_ctx, at(26, 2, 59)).created == []  # not yet due; the 25th's 03:00 predates the audit
    report = tick(audit_ctx, at(26, 3, 0, 5))
    assert len(report.created) == 1 and report.launched == report.created
    assert [tick(audit_ctx, at(26, 3, 0, s)).created for s in (10, 40, 59)] == [[], [], []]  # duplicates
    assert slots(sessions, audit_id) == ["at:2025-11-26T03:00:00Z"]
    assert len(queue.jobs) == 1
    run = run_state(sessions, report.created[0])
    assert (run.trigger, run.scheduled_for, run.status) == ("schedule", at(26, 3), "running")
    finish_all(queue, audit_ctx, at(26, 3, 1))
    assert run_state(sessions, run.id).verdict == "baseline"
    assert tick(audit_ctx, at(26, 23, 59)).created == []


def test_after_downtime_only_the_latest_missed_slot_runs(sessions, audit_ctx, queue, audit_id):
    tick(audit_ctx, at(26, 3, 0, 1))
    finish_all(queue, audit_ctx, at(26, 3, 2))
    report = tick(audit_ctx, at(29, 17))  # the scheduler was down from the 26th to the 29th
    assert slots(sessions, audit_id) == ["at:2025-11-26T03:00:00Z", "at:2025-11-29T03:00:00Z"]
    assert len(report.created) == 1


def test_a_slot_falling_due_while_a_run_is_unfinished_waits_for_it(sessions, context, queue, audit_id):
    audit_ctx = audit_context(context, queue, timeout_s=7 * 24 * 3600.0)  # the first run must not time out
    [first] = tick(audit_ctx, at(26, 3, 0, 1)).created
    assert tick(audit_ctx, at(27, 3, 0, 1)).created == []  # the 26th's job has not run
    assert run_state(sessions, first).status == "running"
    queue.run_jobs()
    report = tick(audit_ctx, at(27, 3, 0, 31))
    # the tick judges the first run, then records the waiting slot at once (not one tick later)
    assert report.finalized == [first] and len(report.created) == 1
    assert run_state(sessions, first).verdict == "baseline"
    assert slots(sessions, audit_id) == ["at:2025-11-26T03:00:00Z", "at:2025-11-27T03:00:00Z"]


def test_changed_and_disabled_audits_take_effect_at_the_next_tick(sessions, audit_ctx, queue, audit_id):
    with session_scope(sessions) as session:
        audit = repo.audits.get(session=session, audit_id=audit_id)
        repo.audits.update(session=session, audit=audit, enabled=False)
    assert tick(audit_ctx, at(26, 3, 0, 1)).created == []
    with session_scope(sessions) as session:
        audit = repo.audits.get(session=session, audit_id=audit_id)
        # what PATCH does: a changed schedule or a re-enabled audit counts slots from that moment
        repo.audits.update(
            session=session,
            audit=audit,
            enabled=True,
            cron="30 * * * *",
            timezone="Europe/Paris",
            schedule_from=at(26, 9, 10),
        )
    assert tick(audit_ctx, at(26, 9, 20)).created == []  # 09:00 predates the change
    assert len(tick(audit_ctx, at(26, 9, 30, 2)).created) == 1
    assert slots(sessions, audit_id) == ["at:2025-11-26T09:30:00Z"]


def test_interval_schedules_and_concurrent_ticks(sessions, store, audit_ctx, queue):
    with session_scope(sessions) as session:
        add_version(session, store, "gap-cnn")
        audit_id = add_audit(session, add_digits(session).id, interval_s=600, schedule_from=CREATED).id
    barrier, reports = threading.Barrier(3), []

    def beat() -> None:  # three beat processes by mistake, ticking at the same instant
        barrier.wait()
        reports.append(tick(audit_ctx, at(26, 10, 5)))

    threads = [threading.Thread(target=beat) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert slots(sessions, audit_id) == ["at:2025-11-26T10:00:00Z"]
    assert sum(len(report.created) for report in reports) == 1
    assert sum(len(report.launched) for report in reports) == 1 and len(queue.jobs) == 1


def test_the_tick_launches_pending_runs_and_finalizes_runs_whose_jobs_were_cancelled(
    sessions, audit_ctx, queue, audit_id
):
    with session_scope(sessions) as session:
        audit = repo.audits.get(session=session, audit_id=audit_id)
        run_id = repo.audits.create_run(
            session=session, audit=audit, slot="version:1", trigger="new_version", target_model_id=1
        ).id
    assert tick(audit_ctx, at(25, 13)).launched == [run_id]
    with session_scope(sessions) as session:  # cancelled through the API while queued: no worker reports it
        [(_, job)] = repo.audits.list_run_jobs(session=session, run_ids=[run_id])
        repo.jobs.request_cancel(session=session, job=job)
    assert tick(audit_ctx, at(25, 13, 1)).finalized == [run_id]
    run = run_state(sessions, run_id)
    assert run.verdict == "error" and "was cancelled" in run.reason


class WorkerDied(BaseException):
    """The worker process ending between the launch's commit and its sends (not an error launch can catch)."""


def test_the_tick_sends_again_the_jobs_of_a_launch_that_died_before_sending_them(
    sessions, context, queue, audit_id
):
    run_id = manual_run(sessions, audit_id)
    dying = audit_context(context, queue, clock=lambda: at(26, 10))

    def die(job):
        raise WorkerDied()

    dying.send_job = die
    with pytest.raises(WorkerDied):
        launch_run(run_id, dying)
    assert run_state(sessions, run_id).status == "running" and queue.jobs == []  # committed, never sent
    audit_ctx = audit_context(context, queue, timeout_s=7 * 24 * 3600.0)
    assert tick(audit_ctx, at(26, 10, 2)).resent_jobs == []  # a launch may still be sending
    assert tick(audit_ctx, at(26, 10, 6)).resent_jobs == [run_id]
    assert len(queue.jobs) == 1
    assert tick(audit_ctx, at(26, 10, 12)).resent_jobs == []  # sent once, not at every tick
    queue.run_jobs()
    tick(audit_ctx, at(26, 10, 13))
    assert run_state(sessions, run_id).verdict == "baseline"


def test_a_launch_that_sent_its_jobs_is_never_sent_again(sessions, context, queue, audit_id):
    run_id = manual_run(sessions, audit_id)
    audit_ctx = audit_context(context, queue, clock=lambda: at(26, 10), timeout_s=7 * 24 * 3600.0)
    launch_run(run_id, audit_ctx)
    assert run_state(sessions, run_id).jobs_sent_at == at(26, 10)
    assert tick(audit_ctx, at(26, 12)).resent_jobs == [] and len(queue.jobs) == 1


def finished_with_pending_webhook(
    sessions, audit_id: int, finished, attempts: int = 0, last_attempt=None
) -> int:
    with session_scope(sessions) as session:
        audit = repo.audits.get(session=session, audit_id=audit_id)
        repo.audits.update(session=session, audit=audit, webhook_url="https://hooks.example.com/x")
        run = repo.audits.create_run(
            session=session, audit=audit, slot=f"manual:{attempts}", trigger="manual"
        )
        repo.audits.transition_run(
            session=session,
            run_id=run.id,
            from_status="pending",
            to_status="finished",
            verdict="baseline",
            finished_at=finished,
            webhook_status="pending",
            webhook_attempts=attempts,
            webhook_at=last_attempt,
        )
        return run.id


def test_the_tick_sends_again_a_webhook_delivery_that_is_overdue(sessions, audit_ctx, queue, audit_id):
    audit_ctx.webhook = WebhookSettings(backoff_s=10.0)
    # the worker died between the verdict's commit and sending the delivery
    never_sent = finished_with_pending_webhook(sessions, audit_id, at(26, 10))
    # attempt 3 failed at 10:00:00; attempt 4 is due 40 s later, by a retry message that was lost
    retry_lost = finished_with_pending_webhook(
        sessions, audit_id, at(26, 9), attempts=3, last_attempt=at(26, 10)
    )
    assert (
        tick(audit_ctx, at(26, 10, 4)).resent_webhooks == []
    )  # not overdue yet: their messages may be queued
    assert tick(audit_ctx, at(26, 10, 5, 10)).resent_webhooks == [never_sent]  # 5 min after the verdict
    assert tick(audit_ctx, at(26, 10, 5, 41)).resent_webhooks == [never_sent, retry_lost]
    assert queue.webhooks == [never_sent, never_sent, retry_lost]
    with session_scope(sessions) as session:  # delivered meanwhile: nothing more to send
        for run_id in (never_sent, retry_lost):
            repo.audits.update_run(
                session=session,
                run=repo.audits.get_run(session=session, run_id=run_id),
                webhook_status="delivered",
            )
    assert tick(audit_ctx, at(26, 11)).resent_webhooks == []
