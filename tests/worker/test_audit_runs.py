"""Audit runs in-process: launch → jobs → finalize → verdict, with real evaluations of the demo model versions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from db import repositories as repo
from db.base import utcnow
from db.session import session_scope
from tests.support.builders import add_digits, add_model_file, write_faulty_model
from tests.support.worker_audits import (
    CONFIG,
    InlineQueue,
    add_audit,
    add_version,
    audit_context,
    manual_run,
    regressed_metrics,
    run_state,
)
from worker import audits as audit_tasks
from worker import tasks
from worker.audit_runs import finalize_run, launch_run

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def queue(context) -> InlineQueue:
    return InlineQueue(context)


@pytest.fixture
def audit_ctx(context, queue):
    return audit_context(context, queue)


@pytest.fixture
def digits_id(sessions) -> int:
    with session_scope(sessions) as session:
        return add_digits(session).id


def complete(run_id: int, audit_ctx, queue: InlineQueue):
    """Launch the run, run its jobs in-process, finalize it; the finished run."""
    assert launch_run(run_id, audit_ctx) == "running"
    assert set(queue.run_jobs()) == {"succeeded"}
    finalize_run(run_id, audit_ctx)
    return run_state(audit_ctx.sessions, run_id)


def test_baseline_then_a_fragile_version_regresses_and_an_equivalent_one_passes(
    sessions, store, audit_ctx, queue, digits_id
):
    with session_scope(sessions) as session:
        v1 = add_version(session, store, "gap-cnn")
        audit_id = add_audit(session, digits_id, webhook_url="http://127.0.0.1:9/hook").id
    first = complete(manual_run(sessions, audit_id, "manual:1"), audit_ctx, queue)
    assert (first.status, first.verdict) == ("finished", "baseline")
    assert first.result["comparisons"][0]["candidate"]["model_id"] == v1
    assert queue.webhooks == [first.id] and first.webhook_status == "pending"

    with session_scope(sessions) as session:
        fragile = add_version(session, store, "gap-cnn-fragile")
    second = complete(
        manual_run(sessions, audit_id, f"version:{fragile}", trigger="new_version", target_model_id=fragile),
        audit_ctx,
        queue,
    )
    assert second.verdict == "regressed"
    assert regressed_metrics(second) >= {("robust_auc", None), ("accuracy", 4), ("accuracy", 8)}
    assert ("clean_accuracy", None) not in regressed_metrics(second)  # more accurate, yet less robust
    entry = second.result["comparisons"][0]
    assert (
        entry["candidate"]["model_id"] == fragile
        and entry["baseline"]["job_id"] == first.result["comparisons"][0]["candidate"]["job_id"]
    )
    assert "accuracy at ε=8/255 fell" in second.reason and "allowed 5 pp" in second.reason

    with session_scope(sessions) as session:
        add_version(session, store, "gap-cnn-retrained")
    third = complete(manual_run(sessions, audit_id, "manual:3"), audit_ctx, queue)
    # judged against the last run that passed (the first), not the regressed one
    assert third.verdict == "passed", third.reason
    assert third.result["comparisons"][0]["baseline"]["run_id"] == first.id


def test_a_failed_job_makes_the_verdict_error_with_its_message(
    sessions, store, audit_ctx, queue, digits_id, tmp_path
):
    with session_scope(sessions) as session:
        add_model_file(session, store, write_faulty_model(tmp_path / "raises.pt"), "faulty")
        audit_id = add_audit(session, digits_id, model_name="faulty").id
    run_id = manual_run(sessions, audit_id)
    launch_run(run_id, audit_ctx)
    assert queue.run_jobs() == ["failed"]
    assert finalize_run(run_id, audit_ctx) == "error"
    run = run_state(sessions, run_id)
    assert run.verdict == "error" and "failed: " in run.reason and "forward refuses" in run.reason
    assert finalize_run(run_id, audit_ctx) is None  # written once


def test_a_pinned_baseline_and_fixed_model_ids(sessions, store, audit_ctx, queue, digits_id):
    with session_scope(sessions) as session:
        v1 = add_version(session, store, "gap-cnn")
        fragile = add_version(session, store, "gap-cnn-fragile")
        retrained = add_version(session, store, "gap-cnn-retrained")
        pinned_audit = add_audit(session, digits_id, name="first", model_ids=[v1], model_name=None).id
    first = complete(manual_run(sessions, pinned_audit), audit_ctx, queue)
    pinned_job = first.result["comparisons"][0]["candidate"]["job_id"]
    with session_scope(sessions) as session:
        audit_id = add_audit(
            session,
            digits_id,
            name="pinned",
            model_ids=[fragile, retrained],
            model_name=None,
            baseline_job_id=pinned_job,
        ).id
    run = complete(manual_run(sessions, audit_id), audit_ctx, queue)
    assert run.verdict == "regressed"
    by_model = {entry["candidate"]["model_id"]: entry for entry in run.result["comparisons"]}
    assert by_model[fragile]["regressed"] and not by_model[retrained]["regressed"]
    assert {entry["baseline"]["job_id"] for entry in by_model.values()} == {pinned_job}


def test_launch_problems_finish_the_run_as_error_without_jobs(sessions, audit_ctx, queue, digits_id):
    with session_scope(sessions) as session:
        audit_id = add_audit(
            session, digits_id, model_name=None, model_ids=[999], webhook_url="http://127.0.0.1:9/"
        ).id
    run_id = manual_run(sessions, audit_id)
    assert launch_run(run_id, audit_ctx) == "error"
    run = run_state(sessions, run_id)
    assert (run.status, run.verdict) == ("finished", "error") and "model 999 no longer exists" in run.reason
    assert queue.jobs == [] and queue.webhooks == [run_id]
    assert launch_run(run_id, audit_ctx) is None  # launched once


def test_jobs_the_broker_refuses_are_failed_and_the_run_judged(sessions, store, context, digits_id):
    queue = InlineQueue(context)

    def refuse(job):
        raise ConnectionError("broker down")

    ctx = audit_context(context, queue)
    ctx.send_job = refuse
    with session_scope(sessions) as session:
        add_version(session, store, "gap-cnn")
        audit_id = add_audit(session, digits_id).id
    run_id = manual_run(sessions, audit_id)
    launch_run(run_id, ctx)
    run = run_state(sessions, run_id)
    assert run.verdict == "error" and "broker unavailable" in run.reason


def test_a_run_past_its_timeout_is_an_error_and_its_jobs_are_cancelled(sessions, store, context, digits_id):
    queue = InlineQueue(context)
    now = [utcnow()]
    ctx = audit_context(context, queue, clock=lambda: now[0], timeout_s=600)
    with session_scope(sessions) as session:
        add_version(session, store, "gap-cnn")
        audit_id = add_audit(session, digits_id).id
    run_id = manual_run(sessions, audit_id)
    launch_run(run_id, ctx)
    assert finalize_run(run_id, ctx) is None  # its job is still queued: nothing to judge yet
    now[0] += timedelta(seconds=601)
    assert finalize_run(run_id, ctx) == "error"
    run = run_state(sessions, run_id)
    assert "had not finished" in run.reason and "never started" in run.reason
    with session_scope(sessions) as session:
        [(_, job)] = repo.audits.list_run_jobs(session=session, run_ids=[run_id])
        assert job.status == "cancelled"


def test_the_evaluate_task_hands_a_finished_run_to_finalize(
    sessions, store, context, audit_ctx, queue, digits_id, monkeypatch
):
    with session_scope(sessions) as session:
        model_id = add_version(session, store, "gap-cnn")
        audit_id = add_audit(session, digits_id).id
        other_job = repo.jobs.create(
            session=session,
            model_id=model_id,
            dataset_id=digits_id,
            config={"eps": [0.0], "cam": "none", "triptychs": 0, "device": "cpu"},
        ).id
    run_id = manual_run(sessions, audit_id)
    launch_run(run_id, audit_ctx)
    [job_id] = queue.jobs
    sent = []
    monkeypatch.setattr(audit_tasks, "audit_context", lambda: audit_ctx)
    monkeypatch.setattr(audit_tasks.finalize, "apply_async", lambda args, queue: sent.append((args, queue)))
    monkeypatch.setattr(tasks, "worker_context", lambda: context)
    assert tasks.evaluate(job_id) == "succeeded"
    assert sent == [([run_id], "control")]  # bookkeeping never waits behind queued evaluations
    assert audit_tasks.finalize(run_id) == "baseline"
    tasks.evaluate(other_job)  # a job outside any audit hands nothing over
    assert len(sent) == 1


def test_after_a_dataset_or_config_change_the_next_run_is_the_new_baseline(
    sessions, store, audit_ctx, queue, digits_id
):
    with session_scope(sessions) as session:
        add_version(session, store, "gap-cnn")
        audit_id = add_audit(session, digits_id).id
        digits = repo.datasets.get(session=session, dataset_id=digits_id)
        other = repo.datasets.create(
            session=session,
            name="digits-again",
            sha256=digits.sha256,
            format="digits",
            num_samples=digits.num_samples,
            input_shape=digits.input_shape,
            num_classes=digits.num_classes,
            class_names=digits.class_names,
            source=digits.source,
        ).id
    first = complete(manual_run(sessions, audit_id, "manual:1"), audit_ctx, queue)
    assert first.verdict == "baseline"

    def change(**fields) -> None:  # what PATCH /audits/{id} does
        with session_scope(sessions) as session:
            repo.audits.update(
                session=session, audit=repo.audits.get(session=session, audit_id=audit_id), **fields
            )

    change(config={**CONFIG, "eps": [0.0, 8 / 255]})
    second = complete(manual_run(sessions, audit_id, "manual:2"), audit_ctx, queue)
    assert second.verdict == "baseline" and "evaluation config changed" in second.reason, second.reason
    assert second.result["comparisons"][0]["baseline"] is None
    third = complete(manual_run(sessions, audit_id, "manual:3"), audit_ctx, queue)
    assert third.verdict == "passed" and third.result["comparisons"][0]["baseline"]["run_id"] == second.id

    change(dataset_id=other)
    fourth = complete(manual_run(sessions, audit_id, "manual:4"), audit_ctx, queue)
    assert fourth.verdict == "baseline" and "dataset or the evaluation config changed" in fourth.reason

    change(
        dataset_id=digits_id, config=CONFIG
    )  # back to the first run's dataset and config: compared with it
    fifth = complete(manual_run(sessions, audit_id, "manual:5"), audit_ctx, queue)
    assert fifth.verdict == "passed" and fifth.result["comparisons"][0]["baseline"]["run_id"] == first.id


def test_options_that_only_choose_output_files_keep_the_baseline(
    sessions, store, audit_ctx, queue, digits_id
):
    with session_scope(sessions) as session:
        add_version(session, store, "gap-cnn")
        audit_id = add_audit(session, digits_id).id
    first = complete(manual_run(sessions, audit_id, "manual:1"), audit_ctx, queue)
    with session_scope(sessions) as session:
        repo.audits.update(
            session=session,
            audit=repo.audits.get(session=session, audit_id=audit_id),
            config={**CONFIG, "triptychs": 2},
        )
    second = complete(manual_run(sessions, audit_id, "manual:2"), audit_ctx, queue)
    assert second.verdict == "passed" and second.result["comparisons"][0]["baseline"]["run_id"] == first.id


def write_softmax_model(path, variant: str = "gap-cnn"):
    """A demo checkpoint whose forward returns probabilities (softmax of its logits): outputs_are_logits fails."""
    import torch
    from torch import nn

    from services.checkpoints import demo_model_path

    class Softmaxed(nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x).softmax(1)

    wrapped = Softmaxed(torch.jit.load(str(demo_model_path(variant)))).eval()
    torch.jit.save(torch.jit.script(wrapped), str(path))
    return path


def test_a_suspicious_candidate_is_neither_passed_nor_a_baseline(
    sessions, store, audit_ctx, queue, digits_id, tmp_path
):
    with session_scope(sessions) as session:
        model = add_model_file(session, store, write_softmax_model(tmp_path / "softmax.pt"), "digits-net")
        audit_id = add_audit(session, digits_id, config=CONFIG | {"limit": 48, "queries": 20}).id
    first = complete(manual_run(sessions, audit_id, "manual:1"), audit_ctx, queue)
    assert (first.status, first.verdict) == ("finished", "suspicious")  # no baseline, and still not one
    assert first.reason.startswith(
        f"job {first.result['comparisons'][0]['candidate']['job_id']} (digits-net v1): sanity checks failed: "
    )
    assert "outputs_are_logits (Outputs are logits) — " in first.reason
    candidate = first.result["comparisons"][0]["candidate"]
    assert candidate["model_id"] == model.id and candidate["sanity_verdict"] == "suspicious"
    assert "outputs_are_logits" in candidate["failed_checks"]
    # The next run finds no earlier run to compare with: a suspicious run never serves as the baseline.
    with session_scope(sessions) as session:
        add_version(session, store, "gap-cnn")
    second = complete(manual_run(sessions, audit_id, "manual:2"), audit_ctx, queue)
    assert second.verdict == "baseline"
    assert second.result["comparisons"][0]["candidate"]["sanity_verdict"] == "passed"
