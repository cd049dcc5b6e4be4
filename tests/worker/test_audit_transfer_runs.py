"""Audit runs with transfer sources, in-process: evaluation and transfer job → verdict with the transfer metric."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from api.errors import Conflict
from api.services import transfers as transfer_service
from db import repositories as repo
from db.base import utcnow
from db.models import Audit, AuditRun, ModelRecord
from db.session import session_scope
from services.audit_transfer import TransferOutcome
from services.audit_verdict import JobResult, Thresholds, judge
from tests.support.builders import add_digits
from tests.support.worker_audits import (
    InlineQueue,
    add_audit,
    add_version,
    audit_context,
    manual_run,
    run_state,
)
from worker import audits as audit_tasks
from worker.audit_recovery import resend_unsent_jobs
from worker.audit_runs import finalize_run, launch_run
from worker.webhooks import payload

pytestmark = pytest.mark.timeout(180)
EPS_8 = round(8 / 255, 9)


@pytest.fixture
def queue(context) -> InlineQueue:
    return InlineQueue(context)


@pytest.fixture
def audit_ctx(context, queue):
    return audit_context(context, queue)


@pytest.fixture
def setup(sessions, store):
    """The digits, a fixed transfer source (registered under another name), and an audit using it."""
    with session_scope(sessions) as session:
        digits = add_digits(session).id
        source = add_version(session, store, "gap-cnn-retrained", name="surrogate")
        add_version(session, store, "gap-cnn")
        audit_id = add_audit(session, digits, transfer_source_ids=[source]).id
    return audit_id, source


def transfer_row(run) -> dict:
    (row,) = [
        r for r in run.result["comparisons"][0]["rows"] if r["metric"] == "transfer_worst_case_accuracy"
    ]
    return row


def stored_worst(sessions, run_id: int, model_id: int) -> float:
    with session_scope(sessions) as session:
        job = repo.audit_transfers.get(session=session, run_id=run_id)
        (point,) = [
            p
            for p in job.points
            if p.source_model_id is None
            and p.attack == "all"
            and p.target_model_id == model_id
            and round(p.eps, 9) == EPS_8
        ]
        return point.accuracy


def test_a_run_waits_for_its_transfer_job_and_judges_its_worst_case_against_the_baseline(
    sessions, store, audit_ctx, queue, setup
):
    audit_id, source = setup
    first_id = manual_run(sessions, audit_id, "manual:1")
    assert launch_run(first_id, audit_ctx) == "running"
    assert len(queue.transfers) == 1
    with session_scope(sessions) as session:
        transfer = repo.audit_transfers.get(session=session, run_id=first_id)
        assert transfer.model_ids("source") == [source] and transfer.config["eps"][-1] == pytest.approx(
            8 / 255
        )
        assert repo.audit_transfers.run_id_for(session=session, transfer_id=transfer.id) == first_id
    assert queue.run_jobs() == ["succeeded"]
    assert finalize_run(first_id, audit_ctx) is None  # the transfer job has not run yet
    assert queue.run_transfers() == ["succeeded"]
    assert finalize_run(first_id, audit_ctx) == "baseline"
    first = run_state(sessions, first_id)
    candidate = first.result["comparisons"][0]["candidate"]
    assert candidate["transfer_job_id"] == transfer.id

    second_id = manual_run(sessions, audit_id, "manual:2")
    launch_run(second_id, audit_ctx)
    queue.run_jobs(), queue.run_transfers()
    assert finalize_run(second_id, audit_ctx) == "passed"  # the same model and sources: the same numbers
    row = transfer_row(run_state(sessions, second_id))
    expected = 100 * stored_worst(sessions, first_id, candidate["model_id"])
    assert row["eps"] == EPS_8 and row["baseline"] == pytest.approx(expected)
    assert row["candidate"] == pytest.approx(100 * stored_worst(sessions, second_id, candidate["model_id"]))
    assert row["delta"] == pytest.approx(0.0) and row["regressed"] is False

    # the fragile version regresses white-box, yet its black-box worst case against this source rose:
    # the transfer row says so and is not among the reasons
    with session_scope(sessions) as session:
        fragile = add_version(session, store, "gap-cnn-fragile")
    third_id = manual_run(
        sessions, audit_id, f"version:{fragile}", trigger="new_version", target_model_id=fragile
    )
    launch_run(third_id, audit_ctx)
    queue.run_jobs(), queue.run_transfers()
    assert finalize_run(third_id, audit_ctx) == "regressed"
    third = run_state(sessions, third_id)
    row = transfer_row(third)
    assert row["candidate"] == pytest.approx(100 * stored_worst(sessions, third_id, fragile))
    assert row["delta"] > 0 and row["regressed"] is False
    assert "transfer" not in third.reason


def test_a_transfer_job_the_broker_refuses_makes_the_run_an_error_with_its_reason(
    sessions, audit_ctx, queue, setup
):
    audit_id, _ = setup

    def refuse(job):
        raise ConnectionError("broker down")

    audit_ctx.send_transfer = refuse
    run_id = manual_run(sessions, audit_id)
    launch_run(run_id, audit_ctx)
    assert queue.run_jobs() == ["succeeded"]
    assert finalize_run(run_id, audit_ctx) == "error"
    run = run_state(sessions, run_id)
    assert (
        "transfer job" in run.reason
        and "failed: broker unavailable: ConnectionError: broker down" in run.reason
    )
    # the run's evidence stays: its transfer job, though ended, cannot be deleted while the run exists
    with session_scope(sessions) as session:
        transfer = repo.audit_transfers.get(session=session, run_id=run_id)
        with pytest.raises(Conflict, match=f"audit run {run_id}"):
            transfer_service.delete(session=session, transfer_job=transfer)


def test_a_source_that_is_also_the_audited_model_stops_the_launch_with_a_message(
    sessions, audit_ctx, queue, setup
):
    audit_id, source = setup
    with session_scope(sessions) as session:
        audited = session.scalars(select(ModelRecord.id).where(ModelRecord.id != source)).one()
        audit = repo.audits.get(session=session, audit_id=audit_id)
        repo.audits.update(session=session, audit=audit, transfer_source_ids=[source, audited])
    run_id = manual_run(sessions, audit_id)
    assert launch_run(run_id, audit_ctx) == "error"
    run = run_state(sessions, run_id)
    assert f"transfer source model {audited} is also a model this run audits" in run.reason
    assert queue.jobs == [] and queue.transfers == []


def test_a_missing_source_stops_the_launch_with_a_message(sessions, audit_ctx, queue, setup):
    audit_id, _ = setup
    with session_scope(sessions) as session:
        audit = repo.audits.get(session=session, audit_id=audit_id)
        repo.audits.update(session=session, audit=audit, transfer_source_ids=[9999])
    run_id = manual_run(sessions, audit_id)
    assert launch_run(run_id, audit_ctx) == "error"
    run = run_state(sessions, run_id)
    assert run.verdict == "error" and "transfer source model 9999 no longer exists" in run.reason
    assert queue.jobs == [] and queue.transfers == []


def test_the_transfer_task_hands_a_finished_run_to_finalize(sessions, audit_ctx, queue, setup, monkeypatch):
    audit_id, _ = setup
    run_id = manual_run(sessions, audit_id)
    launch_run(run_id, audit_ctx)
    handed = []
    monkeypatch.setattr(audit_tasks.finalize, "apply_async", lambda args, queue: handed.append(args[0]))
    (transfer_id,) = queue.transfers
    queue.run_transfers()
    audit_tasks.transfer_ended(transfer_id, sessions)
    assert handed == [run_id]


def test_a_launch_that_died_before_its_sends_has_its_transfer_job_sent_again(
    sessions, audit_ctx, queue, setup
):
    audit_id, _ = setup
    run_id = manual_run(sessions, audit_id)
    launch_run(run_id, audit_ctx)
    (transfer_id,) = queue.transfers
    with session_scope(sessions) as session:  # as if the launch died between its commit and its sends
        run = repo.audits.get_run(session=session, run_id=run_id)
        repo.audits.update_run(
            session=session, run=run, jobs_sent_at=None, started_at=utcnow() - timedelta(hours=1)
        )
    assert resend_unsent_jobs(audit_ctx) == [run_id]
    assert queue.transfers == [transfer_id, transfer_id]


def test_the_webhook_payload_names_a_regressed_transfer_metric():
    candidate = JobResult(2, 1, "net", "v2", "succeeded", report=REPORT, run_id=2, transfer=_outcome(12, 0.5))
    baseline = JobResult(1, 1, "net", "v1", "succeeded", report=REPORT, run_id=1, transfer=_outcome(11, 0.6))
    verdict = judge([(candidate, baseline)], Thresholds())
    run = AuditRun(id=2, slot="manual:x", trigger="manual", verdict=verdict.verdict, reason=verdict.reason)
    run.audit = Audit(id=1, name="nightly")
    run.result = {"comparisons": verdict.comparisons, "errors": verdict.errors}
    body = payload(run, "https://advaudit.example")
    (regression,) = body["regressions"]
    assert regression["metric"] == "transfer_worst_case_accuracy" and regression["candidate_job_id"] == 2
    assert body["comparisons"][0]["candidate"]["transfer_job_id"] == 12
    assert "black-box (transfer) worst-case accuracy" in body["run"]["reason"]


REPORT = {"fgsm": [{"eps": 8 / 255, "accuracy": 0.5}], "summary": {"clean_accuracy": 0.9}}


def _outcome(transfer_id: int, worst: float) -> TransferOutcome:
    return TransferOutcome(transfer_id, "succeeded", (7,), worst_case={EPS_8: worst})
