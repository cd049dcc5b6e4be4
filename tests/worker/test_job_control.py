"""Cancellation inside long batches, the job time limit, the watchdog, attempts, scratch folders, messages."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import torch

from db import repositories as repo
from db.base import utcnow
from db.session import session_scope
from services.checkpoints import load_model
from tests.support.builders import add_digits, add_model_file, write_faulty_model
from tests.support.worker_jobs import load_job, submit
from worker import runner, scratch

# One batch of all 1437 training digits and 200 ε values: minutes of forwards unless stopped inside the batch.
LONG_BATCH = {"batch_size": 2048, "eps": [i / 1000 for i in range(200)], "cam": "none", "triptychs": 0}


@pytest.fixture
def train_id(sessions) -> int:
    with session_scope(sessions) as session:
        return add_digits(session, "digits:train").id


def _context(sessions, store, tmp_path, **overrides) -> runner.WorkerContext:
    values = {
        "progress_interval_s": 0.0,
        "lease_s": 30.0,
        "heartbeat_interval_s": 1.0,
        "scratch_root": tmp_path / "scratch",
    }
    return runner.WorkerContext(sessions=sessions, store=store, **(values | overrides))


def _in_thread(job_id: int, context) -> tuple[threading.Thread, dict]:
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("status", runner.run_job(job_id, context)))
    thread.start()
    return thread, outcome


def _wait(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def _one_forward_s() -> float:
    """What one inference forward of the long batch costs here (the bound the latency is measured against)."""
    model = load_model("demo:gap-cnn", input_shape=(1, 32, 32)).module
    x = torch.rand(1437, 1, 32, 32)
    with torch.inference_mode():
        model(x)
        started = time.perf_counter()
        model(x)
    return time.perf_counter() - started


def test_a_cancel_stops_a_job_inside_a_long_batch_within_two_seconds(
    sessions, store, demo_ids, train_id, tmp_path
):
    context = _context(sessions, store, tmp_path)
    job_id = submit(sessions, demo_ids[0], train_id, LONG_BATCH)
    thread, outcome = _in_thread(job_id, context)
    _wait(lambda: load_job(sessions, job_id).status == "running", 30, "the job to start")
    time.sleep(1.5)  # well inside the one batch (progress is reported only after it)
    requested = time.monotonic()
    with session_scope(sessions) as session:
        repo.jobs.request_cancel(session=session, job=repo.jobs.get(session=session, job_id=job_id))
    _wait(lambda: load_job(sessions, job_id).status == "cancelled", 30, "the job to end cancelled")
    latency = time.monotonic() - requested
    thread.join(timeout=30)
    assert outcome["status"] == "cancelled"
    forward_s = _one_forward_s()
    print(f"cancel latency {latency:.3f} s (one forward of the batch: {forward_s:.3f} s)")
    assert latency <= 2.0 + forward_s, f"cancelled {latency:.2f} s after the request"
    assert list((tmp_path / "scratch").iterdir()) == []  # the attempt's folder went with it


def test_the_time_limit_stops_a_job_at_its_next_check(sessions, store, demo_ids, train_id, tmp_path):
    context = _context(sessions, store, tmp_path, time_limit_s=1.0)
    job_id = submit(sessions, demo_ids[0], train_id, LONG_BATCH)
    started = time.monotonic()
    assert runner.run_job(job_id, context) == "failed"
    job = load_job(sessions, job_id)
    assert job.error == "exceeded the time limit of 1 s"
    assert time.monotonic() - started <= 1.0 + 2.0 + _one_forward_s()  # model loading included
    assert job.report is None


def test_a_job_that_never_reaches_a_check_is_ended_by_the_watchdog(
    sessions, store, demo_ids, tmp_path, monkeypatch
):
    """A forward pass that never returns: the watchdog records the outcome, then kills the process."""
    killed = threading.Event()
    hung = threading.Event()

    def hangs(*args, **kwargs):  # ignores should_stop, like a forward pass stuck in native code
        hung.wait(20)
        raise RuntimeError("the forward pass finally returned")

    monkeypatch.setattr(runner, "evaluate", hangs)
    context = _context(
        sessions,
        store,
        tmp_path,
        time_limit_s=0.5,
        kill_grace_s=0.5,
        heartbeat_interval_s=0.2,
        kill=killed.set,
    )
    job_id = submit(sessions, *demo_ids)
    thread, outcome = _in_thread(job_id, context)
    started = time.monotonic()
    assert killed.wait(10), "the watchdog did not kill the hung job"
    stopped = time.monotonic() - started
    job = load_job(sessions, job_id)
    assert job.status == "failed" and job.error.startswith(
        "exceeded the time limit of 0.5 s; it did not stop"
    )
    assert stopped < 0.5 + 0.5 + 1.0  # limit + grace + one watchdog period, with slack
    hung.set()  # in a worker the process is gone by now; here the call returns, and writes nothing
    thread.join(timeout=10)
    assert outcome["status"] is None and load_job(sessions, job_id).status == "failed"


def test_a_cancel_of_a_hung_job_ends_it_cancelled(sessions, store, demo_ids, tmp_path, monkeypatch):
    killed, hung = threading.Event(), threading.Event()
    monkeypatch.setattr(runner, "evaluate", lambda *args, **kwargs: hung.wait(20))
    context = _context(sessions, store, tmp_path, kill_grace_s=0.5, heartbeat_interval_s=0.2, kill=killed.set)
    job_id = submit(sessions, *demo_ids)
    thread, _ = _in_thread(job_id, context)
    _wait(lambda: load_job(sessions, job_id).status == "running", 30, "the job to start")
    with session_scope(sessions) as session:
        repo.jobs.request_cancel(session=session, job=repo.jobs.get(session=session, job_id=job_id))
    assert killed.wait(10)
    assert load_job(sessions, job_id).status == "cancelled"
    hung.set()
    thread.join(timeout=10)


def _claim(sessions, job_id: int, host: str) -> int:
    with session_scope(sessions) as session:
        return repo.jobs.claim(session=session, job_id=job_id, worker_host=host).attempts


def test_settling_a_process_killed_at_the_hard_limit(sessions, store, demo_ids, tmp_path):
    context = _context(sessions, store, tmp_path, time_limit_s=5.0)
    job_id = submit(sessions, *demo_ids)
    _claim(sessions, job_id, "host:41")
    assert (
        runner.settle_lost_process(context, job_id, "host:42", timed_out=True, reason="x") is None
    )  # not its
    assert (
        runner.settle_lost_process(context, job_id, "host:41", timed_out=True, reason="hard limit")
        == "failed"
    )
    job = load_job(sessions, job_id)
    assert job.error.startswith("exceeded the time limit of 5 s") and job.lost_reason == "hard limit"


def test_a_lost_process_queues_its_job_again_until_attempts_run_out(sessions, store, demo_ids, tmp_path):
    context = _context(sessions, store, tmp_path, max_attempts=2)
    job_id = submit(sessions, *demo_ids)
    reason = "its process died (signal 9 (SIGKILL))"
    _claim(sessions, job_id, "host:1")
    assert runner.settle_lost_process(context, job_id, "host:1", timed_out=False, reason=reason) == "queued"
    assert (load_job(sessions, job_id).status, load_job(sessions, job_id).worker_host) == ("queued", None)
    _claim(sessions, job_id, "host:2")
    assert runner.settle_lost_process(context, job_id, "host:2", timed_out=False, reason=reason) == "failed"
    job = load_job(sessions, job_id)
    assert job.error == (
        "the worker died or was killed 2 times while running this job, so it is not run again; "
        f"last: {reason}"
    )


def test_the_sweep_fails_a_job_whose_attempts_ran_out(sessions, store, demo_ids, tmp_path):
    context = _context(sessions, store, tmp_path, lease_s=5.0, max_attempts=1)
    job_id = submit(sessions, *demo_ids)
    _claim(sessions, job_id, "gone:1")
    with session_scope(sessions) as session:
        repo.jobs.update(
            session=session,
            job=repo.jobs.get(session=session, job_id=job_id),
            heartbeat_at=utcnow() - timedelta(seconds=60),
        )
    sent = []
    assert runner.requeue_abandoned(context, lambda job_id, queue: sent.append(job_id)) == []
    job = load_job(sessions, job_id)
    assert sent == [] and job.status == "failed" and "stopped sending heartbeats" in job.error


def test_stale_scratch_folders_go_and_live_ones_stay(sessions, store, demo_ids, tmp_path):
    root = tmp_path / "scratch"
    live_id, over_id, requeued_id = (submit(sessions, *demo_ids) for _ in range(3))
    for job_id in (live_id, over_id, requeued_id):
        _claim(sessions, job_id, "w:1")
    with session_scope(sessions) as session:
        repo.jobs.transition(
            session=session,
            job=repo.jobs.get(session=session, job_id=over_id),
            new_status="failed",
            attempt=1,
        )
        repo.jobs.transition(
            session=session,
            job=repo.jobs.get(session=session, job_id=requeued_id),
            new_status="queued",
            attempt=1,
        )
    _claim(sessions, requeued_id, "w:2")  # attempt 2 now runs: attempt 1's folder is stale
    folders = {
        name: root / name
        for name in (
            f"job-{live_id}-1-abc",
            f"job-{over_id}-1-def",
            f"job-{requeued_id}-1-ghi",
            f"job-{requeued_id}-2-jkl",
            "job-999-1-xyz",
            "not-a-job-folder",
        )
    }
    for path in folders.values():
        (path / "report").mkdir(parents=True)
    removed = scratch.discard_stale(root, sessions)
    assert sorted(p.name for p in removed) == sorted(
        [f"job-{over_id}-1-def", f"job-{requeued_id}-1-ghi", "job-999-1-xyz"]
    )
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [f"job-{live_id}-1-abc", f"job-{requeued_id}-2-jkl", "not-a-job-folder"]
    )


def test_error_messages_keep_server_paths_out(sessions, store, tmp_path):
    with session_scope(sessions) as session:
        model_id = add_model_file(session, store, write_faulty_model(tmp_path / "raises.pt"), "raises").id
        dataset = add_digits(session)
        dataset.storage_key, dataset.format = "0" * 64, "npz"  # a stored file that has gone missing
        dataset_id = dataset.id
    context = _context(sessions, store, tmp_path)
    job_id = submit(sessions, model_id, dataset_id, {"limit": 8, "cam": "none"})
    assert runner.run_job(job_id, context) == "failed"
    assert load_job(sessions, job_id).error == "the file of dataset digits is missing from the store"

    with session_scope(sessions) as session:
        digits_id = add_digits(session, "digits:test").id
    job_id = submit(sessions, model_id, digits_id, {"limit": 8, "cam": "none"})
    assert runner.run_job(job_id, context) == "failed"
    error = load_job(sessions, job_id).error
    assert error == "the model's forward raised RuntimeError: forward refuses batches larger than 2"
    assert str(tmp_path) not in error and "Traceback" not in error


def test_public_messages_name_paths_and_cut_the_rest():
    from worker.messages import public_message

    error = FileNotFoundError("[Errno 2] No such file: '/srv/advaudit/artifacts/ab/abcdef'")
    assert public_message(error) == "FileNotFoundError: [Errno 2] No such file: 'abcdef'"
    aliased = public_message(
        OSError("cannot read /data/x/model.pt2 at 8/255"), {"/data/x/model.pt2": "model m v1"}
    )
    assert aliased == "OSError: cannot read model m v1 at 8/255"
