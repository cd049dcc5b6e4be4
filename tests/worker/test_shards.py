"""Sharded jobs through worker.runner and worker.shard_runner on SQLite, the broker played by a list:
the merged results equal the unsharded job's, and redelivery, loss, cancellation and failure are safe."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest

from db import repositories as repo
from db.base import utcnow
from db.session import session_scope
from tests.support.builders import (
    NAN_ERROR,
    add_digits,
    add_model_file,
    write_exported_demo,
    write_faulty_model,
)
from tests.support.reports import comparable_report
from tests.support.worker_jobs import load_job, row_counts, stored_report, submit
from worker import runner, shard_runner

CONFIG = {
    "limit": 40,
    "batch_size": 8,
    "eps": [0, 2 / 255, 8 / 255],
    "attacks": "fgsm,pgd",
    "steps": 2,
    "targeted": "random",
    "triptychs": 2,
}


@pytest.fixture
def sent() -> list[tuple[int, int]]:
    """The shard tasks sent, (job id, shard index), in order: the broker of these tests."""
    return []


@pytest.fixture
def sharding(context, sent) -> runner.WorkerContext:
    return replace(context, send_shard=lambda job_id, index, queue: sent.append((job_id, index)))


def _comparable(store, sessions, job_id) -> tuple[dict, dict[str, np.ndarray]]:
    document = comparable_report(stored_report(store, sessions, job_id))
    document["config"].pop("shards")
    with session_scope(sessions) as session:
        key = repo.results.get_artifact(session=session, job_id=job_id, name="outcomes.npz").storage_key
    with np.load(store.path(key)) as archive:
        return document, {name: archive[name] for name in archive.files}


def _shards(sessions, job_id):
    with session_scope(sessions) as session:
        return [
            (s.shard_index, s.status, s.attempts, s.worker_host)
            for s in repo.shards.list(session=session, job_id=job_id)
        ]


def test_a_job_in_three_shards_merges_into_the_unsharded_results(sessions, store, sharding, sent, demo_ids):
    model_id, dataset_id = demo_ids
    single = submit(sessions, model_id, dataset_id, {**CONFIG, "shards": 1})
    assert runner.run_job(single, sharding) == "succeeded" and sent == []
    job_id = submit(sessions, model_id, dataset_id, {**CONFIG, "shards": 3})

    assert runner.run_job(job_id, sharding) == "running"
    assert sent == [(job_id, 0), (job_id, 1), (job_id, 2)]
    hosts = ["gpu-a:1", "gpu-b:2", "gpu-a:1"]
    statuses = [
        shard_runner.run_shard(job_id, index, replace(sharding, host=hosts[index])) for index in (2, 0, 1)
    ]
    assert statuses == ["succeeded", "succeeded", "succeeded"]  # the last one merged: the job's status
    job = load_job(sessions, job_id)
    assert (job.status, job.progress, job.shards_total, job.shards_done) == ("succeeded", 1.0, 3, 3)
    assert job.worker_host == "gpu-b:2"  # the merging worker

    document, arrays = _comparable(store, sessions, job_id)
    expected, expected_arrays = _comparable(store, sessions, single)
    assert document == expected
    assert arrays.keys() == expected_arrays.keys()
    for name in arrays:
        np.testing.assert_array_equal(arrays[name], expected_arrays[name], err_msg=name)
    assert row_counts(sessions, job_id) == row_counts(sessions, single)

    timing = stored_report(store, sessions, job_id)["timing"]
    assert [(s["index"], s["start"], s["stop"], s["worker"]) for s in timing["shards"]] == [
        (0, 0, 8, "gpu-a:1"),
        (1, 8, 24, "gpu-b:2"),
        (2, 24, 40, "gpu-a:1"),
    ]
    assert all(s["seconds"] > 0 and s["attempts"] == 1 for s in timing["shards"])
    assert [(w["worker"], w["shards"]) for w in timing["workers"]] == [("gpu-a:1", 2), ("gpu-b:2", 1)]
    assert timing["merge_worker"] == "gpu-b:2" and timing["merge_seconds"] > 0

    # a redelivered shard task, or evaluate task, finds nothing to do and duplicates nothing
    assert shard_runner.run_shard(job_id, 1, sharding) is None
    assert runner.run_job(job_id, sharding) is None
    assert row_counts(sessions, job_id) == row_counts(sessions, single)


def _feature_pictures(sessions, job_id) -> dict[str, str]:
    with session_scope(sessions) as session:
        artifacts = repo.results.list_artifacts(session=session, job_id=job_id)
        return {a.name: a.sha256 for a in artifacts if a.name.startswith("features")}


def test_a_sharded_job_computes_its_features_once_and_equals_the_unsharded_one(
    sessions, store, sharding, sent, tmp_path
):
    """Features are computed by the merging worker's finishing step (a .pt2 model: hooks reach its layers)."""
    with session_scope(sessions) as session:
        path = write_exported_demo(tmp_path / "gap.pt2")
        model_id = add_model_file(session, store, path, "gap-export", fmt="torch.export").id
        dataset_id = add_digits(session).id
    config = {**CONFIG, "cam_samples": 4, "feature_samples": 24, "feature_channels": 2}
    single = submit(sessions, model_id, dataset_id, {**config, "shards": 1})
    assert runner.run_job(single, sharding) == "succeeded"
    job_id = submit(sessions, model_id, dataset_id, {**config, "shards": 3})
    assert runner.run_job(job_id, sharding) == "running"
    assert [shard_runner.run_shard(job_id, index, sharding) for index in (1, 2, 0)][-1] == "succeeded"

    document, _ = _comparable(store, sessions, job_id)
    expected, _ = _comparable(store, sessions, single)
    assert document["features"] == expected["features"] and document == expected
    assert [len(depth["channels"]) for depth in document["features"]["depths"]] == [2, 2, 2]
    pictures = _feature_pictures(sessions, job_id)
    assert set(pictures) == {name for name in document["artifacts"] if name.startswith("features")}
    assert len(pictures) == 5 and pictures == _feature_pictures(sessions, single)  # byte for byte


def test_the_automatic_cut_follows_the_shard_samples_setting(sessions, sharding, sent, demo_ids):
    job_id = submit(sessions, *demo_ids, CONFIG)
    assert runner.run_job(job_id, replace(sharding, shard_samples=16)) == "running"
    assert sent == [(job_id, 0), (job_id, 1), (job_id, 2)]
    with session_scope(sessions) as session:
        assert [
            (s.sample_start, s.sample_stop) for s in repo.shards.list(session=session, job_id=job_id)
        ] == [
            (0, 8),
            (8, 24),
            (24, 40),
        ]


def test_a_shard_lost_with_its_worker_runs_again_once(sessions, store, sharding, sent, demo_ids):
    job_id = submit(sessions, *demo_ids, {**CONFIG, "shards": 2})
    runner.run_job(job_id, sharding)
    with session_scope(sessions) as session:  # a worker took shard 0, then died without a word
        repo.shards.claim(session=session, job_id=job_id, shard_index=0, worker_host="dead:1")
        shard = repo.shards.get(session=session, job_id=job_id, shard_index=0)
        repo.shards.update(session=session, shard=shard, heartbeat_at=utcnow() - timedelta(seconds=60))
    sent.clear()
    assert shard_runner.requeue_abandoned_shards(sharding, lambda *args: sent.append(args[:2])) == [
        (job_id, 0)
    ]
    assert sent == [(job_id, 0)]
    assert shard_runner.run_shard(job_id, 1, sharding) == "succeeded"
    assert shard_runner.run_shard(job_id, 0, sharding) == "succeeded"
    assert [(index, status, attempts) for index, status, attempts, _ in _shards(sessions, job_id)] == [
        (0, "succeeded", 2),
        (1, "succeeded", 1),
    ]
    job = load_job(sessions, job_id)
    assert job.status == "succeeded"
    assert row_counts(sessions, job_id)["sweep_points"] == 6  # three ε, untargeted and targeted: once


def test_a_shard_whose_process_died_is_queued_again_for_its_redelivered_task(sessions, sharding, demo_ids):
    job_id = submit(sessions, *demo_ids, {**CONFIG, "shards": 2})
    runner.run_job(job_id, sharding)
    with session_scope(sessions) as session:
        repo.shards.claim(session=session, job_id=job_id, shard_index=1, worker_host="host:7")
    lost = "its process died (signal 9 (SIGKILL))"
    assert shard_runner.settle_lost_shard(sharding, job_id, 1, "host:8", timed_out=False, reason=lost) is None
    assert (
        shard_runner.settle_lost_shard(sharding, job_id, 1, "host:7", timed_out=False, reason=lost)
        == "queued"
    )
    assert shard_runner.run_shard(job_id, 1, sharding) == "succeeded"
    assert _shards(sessions, job_id)[1][:3] == (1, "succeeded", 2)


def test_cancelling_a_sharded_job_stops_every_shard(sessions, sharding, demo_ids):
    job_id = submit(sessions, *demo_ids, {**CONFIG, "shards": 3})
    runner.run_job(job_id, sharding)
    assert shard_runner.run_shard(job_id, 0, sharding) == "succeeded"
    with session_scope(sessions) as session:
        repo.jobs.request_cancel(session=session, job=repo.jobs.get(session=session, job_id=job_id))
    assert shard_runner.run_shard(job_id, 1, sharding) is None
    assert shard_runner.run_shard(job_id, 2, sharding) is None
    assert load_job(sessions, job_id).status == "cancelled"
    assert [status for _, status, *_ in _shards(sessions, job_id)] == ["succeeded", "cancelled", "cancelled"]
    assert row_counts(sessions, job_id)["sweep_points"] == 0


def test_a_cancel_during_a_shards_sweep_stops_it_and_the_job(sessions, sharding, demo_ids, monkeypatch):
    job_id = submit(sessions, *demo_ids, {**CONFIG, "shards": 2})
    runner.run_job(job_id, sharding)
    real_sweep = shard_runner.sweep_range
    batches_swept: list[int] = []

    def cancelled_after_the_first_batch(*args, progress, **kwargs):
        def spy(stage: str, done: int, total: int) -> None:
            batches_swept.append(done)
            if len(batches_swept) == 1:  # the user cancels while the shard is between its batches
                with session_scope(sessions) as session:
                    repo.jobs.request_cancel(
                        session=session, job=repo.jobs.get(session=session, job_id=job_id)
                    )
            progress(stage, done, total)

        return real_sweep(*args, progress=spy, **kwargs)

    monkeypatch.setattr(shard_runner, "sweep_range", cancelled_after_the_first_batch)
    assert shard_runner.run_shard(job_id, 0, sharding) == "cancelled"
    assert batches_swept == [8]  # its 24 samples are 3 batches of 8: it stopped after the first
    assert shard_runner.run_shard(job_id, 1, sharding) is None  # the other shard, claimed later, does nothing
    assert load_job(sessions, job_id).status == "cancelled"
    assert [status for _, status, *_ in _shards(sessions, job_id)] == ["cancelled", "cancelled"]
    assert row_counts(sessions, job_id)["sweep_points"] == 0


def test_a_failed_shard_fails_the_job_with_its_error(sessions, store, sharding, tmp_path):
    with session_scope(sessions) as session:
        model_id = add_model_file(session, store, write_faulty_model(tmp_path / "nan.pt", "nan"), "nan").id
        dataset_id = add_digits(session).id
    job_id = submit(
        sessions, model_id, dataset_id, {**CONFIG, "attacks": "fgsm", "targeted": None, "shards": 2}
    )
    runner.run_job(job_id, sharding)
    assert shard_runner.run_shard(job_id, 1, sharding) == "failed"
    job = load_job(sessions, job_id)
    assert job.status == "failed"
    assert job.error.startswith("shard 1 (samples 16…39): ") and NAN_ERROR in job.error
    assert shard_runner.run_shard(job_id, 0, sharding) is None  # its job is over: the shard is not run
    assert [status for _, status, *_ in _shards(sessions, job_id)] == ["cancelled", "failed"]
