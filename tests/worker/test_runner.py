"""worker.runner on SQLite without a broker: results, idempotency, worker loss, cancellation, failures, fencing."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import timedelta

import pytest

from db import repositories as repo
from db.base import utcnow
from db.errors import StaleJob
from db.session import session_scope
from services.checkpoints import load_model
from services.datasets import load_dataset
from services.evaluation import evaluate
from services.specs import EvaluationConfig
from tests.support.builders import FORWARD_ERROR, INPUT_SHAPE, NAN_ERROR, add_model_file, write_faulty_model
from tests.support.reports import comparable_report
from tests.support.worker_jobs import CONFIG, load_job, row_counts, stored_report, submit
from worker import runner

SMALL = {"limit": 16, "batch_size": 8, "eps": [0, 8 / 255], "cam": "none"}
ROWS = 6  # three ε, untargeted and targeted
ARTIFACTS = 8  # report.json, outcomes.npz, accuracy curve, filters, 4 triptychs (no CAM: TorchScript)


def in_process(store, model_key: str, config: dict) -> dict:
    """The report.json document of the same evaluation run directly through services."""
    loaded = load_model(store.path(model_key), input_shape=INPUT_SHAPE, device="cpu")
    report = evaluate(loaded, load_dataset("digits"), EvaluationConfig(**config))
    return json.loads(json.dumps(report.to_dict()))


def renamed_like(document: dict, stored: dict) -> dict:
    """`document` with the model and dataset names the runner gives stored reports (`stored`'s)."""
    return {
        **document,
        "model": {**document["model"], "source": stored["model"]["source"]},
        "dataset": {**document["dataset"], "source": stored["dataset"]["source"]},
    }


def model_key(sessions, model_id: int) -> str:
    with session_scope(sessions) as session:
        return repo.models.get(session=session, model_id=model_id).storage_key


def test_job_succeeds_with_the_in_process_report(sessions, store, context, demo_ids):
    model_id, dataset_id = demo_ids
    job_id = submit(sessions, model_id, dataset_id)

    assert runner.run_job(job_id, context) == "succeeded"

    job = load_job(sessions, job_id)
    assert (job.status, job.progress, job.attempts, job.error) == ("succeeded", 1.0, 1, None)
    assert job.worker_host == context.host and job.finished_at >= job.started_at
    assert comparable_report(job.report) == comparable_report(
        in_process(store, model_key(sessions, model_id), CONFIG)
    )
    with session_scope(sessions) as session:
        points = repo.results.sweep_points(session=session, job_id=job_id)
        artifacts = repo.results.list_artifacts(session=session, job_id=job_id)
    assert sorted((p.attack, p.eps) for p in points) == sorted(
        [("fgsm", e) for e in CONFIG["eps"]] + [("targeted_fgsm", e) for e in CONFIG["eps"]]
    )
    by_eps = {(p.attack, p.eps): p for p in points}
    for entry in job.report["fgsm"]:
        assert by_eps["fgsm", entry["eps"]].accuracy == entry["accuracy"]
    assert {a.name for a in artifacts} == set(job.report["artifacts"])
    for artifact in artifacts:
        data = store.path(artifact.storage_key).read_bytes()
        assert hashlib.sha256(data).hexdigest() == artifact.sha256 == artifact.storage_key
        assert len(data) == artifact.size_bytes
    assert stored_report(store, sessions, job_id) == job.report


def test_running_a_finished_job_again_changes_nothing(sessions, context, demo_ids):
    job_id = submit(sessions, *demo_ids)
    assert runner.run_job(job_id, context) == "succeeded"
    before, counts = load_job(sessions, job_id), row_counts(sessions, job_id)

    assert runner.run_job(job_id, context) is None

    after = load_job(sessions, job_id)
    assert (
        row_counts(sessions, job_id)
        == counts
        == {"sweep_points": ROWS, "cam_audits": 0, "artifacts": ARTIFACTS}
    )
    assert (after.attempts, after.finished_at, after.report) == (
        before.attempts,
        before.finished_at,
        before.report,
    )


def test_a_job_of_a_lost_worker_is_taken_over_once_its_lease_expires(sessions, context, demo_ids):
    job_id = submit(sessions, *demo_ids)
    with session_scope(sessions) as session:  # a worker claims the job, then dies without a word
        repo.jobs.claim(session=session, job_id=job_id, worker_host="lost-worker", lease_s=context.lease_s)

    with pytest.raises(runner.JobLeased) as leased:  # its lease is still fresh: maybe it is only slow
        runner.run_job(job_id, context)
    assert 1.0 <= leased.value.retry_after_s <= context.lease_s + 1.0
    assert load_job(sessions, job_id).attempts == 1

    with session_scope(sessions) as session:
        job = repo.jobs.get(session=session, job_id=job_id)
        repo.jobs.update(
            session=session, job=job, heartbeat_at=utcnow() - timedelta(seconds=2 * context.lease_s)
        )
    assert runner.run_job(job_id, context) == "succeeded"

    job = load_job(sessions, job_id)
    assert (job.status, job.attempts, job.worker_host) == ("succeeded", 2, context.host)
    assert row_counts(sessions, job_id)["sweep_points"] == ROWS


def test_the_heartbeat_keeps_the_lease_while_no_progress_is_reported(sessions, store, demo_ids, monkeypatch):
    """A stage without progress callbacks (model load, one long batch, CAM audit) outlasting the lease."""
    lease_s = 0.4
    context = runner.WorkerContext(sessions=sessions, store=store, lease_s=lease_s, progress_interval_s=60)
    rival = runner.WorkerContext(sessions=sessions, store=store, lease_s=lease_s, host="rival")
    job_id = submit(sessions, *demo_ids, config=SMALL)
    real, seen = runner.evaluate, {}

    def slow_evaluate(*args, **kwargs):
        started = load_job(sessions, job_id).heartbeat_at
        time.sleep(3 * lease_s)
        seen["heartbeat_age_s"] = (utcnow() - load_job(sessions, job_id).heartbeat_at).total_seconds()
        seen["heartbeat_advance_s"] = (load_job(sessions, job_id).heartbeat_at - started).total_seconds()
        try:
            seen["rival"] = runner.run_job(job_id, rival)
        except runner.JobLeased:
            seen["rival"] = "leased"
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "evaluate", slow_evaluate)
    assert runner.run_job(job_id, context) == "succeeded"

    assert seen["rival"] == "leased"
    assert seen["heartbeat_age_s"] < lease_s and seen["heartbeat_advance_s"] > lease_s
    assert load_job(sessions, job_id).attempts == 1


def test_cancelling_a_running_job_stops_it_at_the_next_batch(sessions, context, demo_ids, monkeypatch):
    config = {"batch_size": 16, "eps": [0, 8 / 255], "cam": "none"}  # 360 digits: 23 batches
    job_id = submit(sessions, *demo_ids, config=config)
    real, batches = runner.evaluate, []

    def evaluate_then_cancel(loaded, dataset, config, *, progress, should_stop):
        def hooked(stage, done, total):
            batches.append(done)
            if len(batches) == 2:  # the user cancels while the second batch is being reported
                with session_scope(sessions) as session:
                    repo.jobs.request_cancel(
                        session=session, job=repo.jobs.get(session=session, job_id=job_id)
                    )
            progress(stage, done, total)

        return real(loaded, dataset, config, progress=hooked, should_stop=should_stop)

    monkeypatch.setattr(runner, "evaluate", evaluate_then_cancel)
    assert runner.run_job(job_id, context) == "cancelled"

    job = load_job(sessions, job_id)
    assert batches == [16, 32]  # the third batch never ran
    assert (job.status, job.report, job.error) == ("cancelled", None, None)
    assert 0 < job.progress < 0.95 and job.finished_at is not None
    assert row_counts(sessions, job_id) == {"sweep_points": 0, "cam_audits": 0, "artifacts": 0}


@pytest.mark.parametrize(("kind", "message"), [("raises", FORWARD_ERROR), ("nan", NAN_ERROR)])
def test_a_model_failing_during_evaluation_fails_the_job_with_its_message(
    sessions, store, context, demo_ids, tmp_path, kind, message
):
    with session_scope(sessions) as session:
        model_id = add_model_file(session, store, write_faulty_model(tmp_path / f"{kind}.pt", kind), kind).id
    job_id = submit(sessions, model_id, demo_ids[1], config=SMALL)

    assert runner.run_job(job_id, context) == "failed"

    job = load_job(sessions, job_id)
    assert job.status == "failed" and message in job.error
    assert job.report is None and job.finished_at is not None
    assert row_counts(sessions, job_id) == {"sweep_points": 0, "cam_audits": 0, "artifacts": 0}


@pytest.mark.parametrize("batch_size", [128, 8], ids=["one-batch", "many-batches"])
def test_a_stale_attempt_cannot_overwrite_the_newer_attempts_result(
    sessions, store, demo_ids, monkeypatch, batch_size
):
    """Attempt 1 is overtaken mid-evaluation by attempt 2, which finishes first; attempt 1 then writes nothing.

    With one batch attempt 1 reaches the result write (refused by the fence); with many it stops at a batch.
    """
    config = {**CONFIG, "batch_size": batch_size}
    job_id = submit(sessions, *demo_ids, config=config)
    # No leases: the newer worker takes over at once, as after a lease expired.
    older = runner.WorkerContext(sessions=sessions, store=store, lease_s=None, host="older")
    newer = runner.WorkerContext(sessions=sessions, store=store, lease_s=None, host="newer")
    real, documents, outcome = runner.evaluate, [], {}

    def evaluate_overtaken(*args, **kwargs):
        if not outcome:
            outcome["newer"] = "running"
            outcome["newer"] = runner.run_job(job_id, newer)
        report = real(*args, **kwargs)
        documents.append(json.loads(json.dumps(report.to_dict())))
        return report

    monkeypatch.setattr(runner, "evaluate", evaluate_overtaken)
    assert runner.run_job(job_id, older) is None

    assert outcome["newer"] == "succeeded"
    job = load_job(sessions, job_id)
    assert (job.status, job.attempts, job.worker_host) == ("succeeded", 2, "newer")
    newer = renamed_like(documents[0], job.report)
    assert job.report == newer  # the newer attempt's, timing included
    assert stored_report(store, sessions, job_id) == newer
    assert row_counts(sessions, job_id) == {"sweep_points": ROWS, "cam_audits": 0, "artifacts": ARTIFACTS}


def test_a_stale_attempt_writes_no_result_row(sessions, store, context, demo_ids, tmp_path):
    job_id = submit(sessions, *demo_ids)
    with session_scope(sessions) as session:
        repo.jobs.claim(session=session, job_id=job_id, worker_host="older", lease_s=None)
    with session_scope(sessions) as session:
        repo.jobs.claim(session=session, job_id=job_id, worker_host="newer", lease_s=None)
    loaded = load_model(store.path(model_key(sessions, demo_ids[0])), input_shape=INPUT_SHAPE)
    report = evaluate(loaded, load_dataset("digits"), EvaluationConfig(**CONFIG))

    with pytest.raises(StaleJob):
        runner._store_results(context, job_id, 1, report, tmp_path)

    job = load_job(sessions, job_id)
    assert (job.status, job.attempts, job.report) == ("running", 2, None)
    assert row_counts(sessions, job_id) == {"sweep_points": 0, "cam_audits": 0, "artifacts": 0}
    runner._store_results(context, job_id, 2, report, tmp_path / "newer")
    assert row_counts(sessions, job_id)["sweep_points"] == ROWS


def test_models_are_loaded_once_per_process(sessions, store, demo_ids, monkeypatch, fresh_model_cache):
    context = runner.WorkerContext(sessions=sessions, store=store, device="cpu")
    real, loads = runner.load_model, []
    monkeypatch.setattr(runner, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    first, second = submit(sessions, *demo_ids), submit(sessions, *demo_ids)

    assert runner.run_job(first, context) == runner.run_job(second, context) == "succeeded"

    assert len(loads) == 1
    reports = [load_job(sessions, job_id).report for job_id in (first, second)]
    # the cached model came back unchanged
    assert comparable_report(reports[0]) == comparable_report(reports[1])
    assert reports[0]["config"]["device"] == "cpu"  # the worker's device, as the job left it to the worker


def test_each_process_reports_its_own_pid(sessions, store, monkeypatch):
    monkeypatch.setattr(runner.os, "getpid", lambda: 4242)
    assert runner.WorkerContext(sessions=sessions, store=store).host.endswith(":4242")
