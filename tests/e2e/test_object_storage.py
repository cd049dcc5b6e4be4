"""Workers on object storage (a real SeaweedFS S3 server): no shared directory, a kill mid-download, the store
restarted mid-job. Each worker has a data directory of its own, as on another host."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from db import repositories as repo
from db.session import session_scope
from db.storage import open_store
from services.datasets import load_dataset
from tests.support.builders import add_demo_model, add_digits
from tests.support.seaweed import SeaweedServer, store_environment, store_settings
from tests.support.service_harness import wait_for

pytestmark = pytest.mark.timeout(240)

TINY = {"limit": 16, "eps": [0, 8 / 255], "cam": "none", "triptychs": 0}
LONG = {"batch_size": 8, "targeted": "next", "cam": "none", "triptychs": 0}  # digits:train, seconds of work
QUICK = {"batch_size": 8, "attacks": ["fgsm"], "cam": "none", "triptychs": 0, "limit": 400}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A private server: these tests stop and restart it."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed-e2e")).start()
    yield server, server.new_bucket()
    server.stop()


@pytest.fixture(scope="module")
def env(service, s3, tmp_path_factory):
    """The module's service env with its artifacts in the bucket (the test process's own cache apart)."""
    server, bucket = s3
    service.store = open_store(store_settings(server, bucket, tmp_path_factory.mktemp("submitter")))
    return service


@pytest.fixture(scope="module")
def inputs(env) -> dict[str, int]:
    with session_scope(env.sessions) as session:
        return {
            "model": add_demo_model(session, env.store).id,
            "digits": add_digits(session).id,
            "digits_train": add_digits(session, "digits:train").id,
        }


def host_settings(env, s3, label: str) -> dict[str, str]:
    """A worker's variables: the bucket, and a data directory (cache, scratch) no other worker sees."""
    server, bucket = s3
    home = env.root / f"host-{label}"
    return store_environment(server, bucket) | {
        "ADVAUDIT_DATA_DIR": str(home),
        "ADVAUDIT_ARTIFACT_ROOT": str(home / "no-local-artifacts"),
    }


def test_two_workers_with_separate_directories_complete_jobs(env, s3, inputs):
    workers = [env.start_worker(label, host_settings(env, s3, label)) for label in ("gpu-a", "gpu-b")]
    for worker in workers:
        worker.wait_ready()
    job_ids = [env.submit(inputs["model"], inputs["digits_train"], QUICK) for _ in range(2)]
    jobs = [env.wait_finished(job_id, timeout_s=120) for job_id in job_ids]
    assert [job.status for job in jobs] == ["succeeded"] * 2, env.diagnose(job_ids)
    assert len({job.worker_host for job in jobs}) == 2  # one each: neither needed the other's files
    with session_scope(env.sessions) as session:
        model_key = repo.models.get(session=session, model_id=inputs["model"]).storage_key
        artifacts = [
            repo.results.get_artifact(session=session, job_id=j, name="report.json") for j in job_ids
        ]
    for artifact in artifacts:  # the report files went back to the bucket
        assert env.store.size(artifact.storage_key) == artifact.size_bytes
    for label in ("gpu-a", "gpu-b"):
        home = env.root / f"host-{label}"
        assert (home / "cache" / model_key[:2] / model_key[2:]).is_file()
        assert not (home / "no-local-artifacts").exists()
    for worker in workers:
        worker.kill()


def big_dataset(env, tmp_path: Path) -> int:
    """A 128 MiB stored npz (uint8 32×32 images): a download that takes a noticeable moment on loopback."""
    count = 128 * 1024
    rng = np.random.default_rng(0)
    path = tmp_path / "big.npz"
    np.savez(path, x=rng.integers(0, 256, (count, 32, 32), dtype=np.uint8), y=np.arange(count) % 10)
    info = load_dataset(path).info
    key, sha256, size = env.store.put_file(path)
    with session_scope(env.sessions) as session:
        return repo.datasets.create(
            session=session,
            name="big",
            sha256=sha256,
            format="npz",
            num_samples=info.num_samples,
            input_shape=info.input_shape,
            num_classes=info.num_classes,
            class_names=info.class_names,
            source="big.npz",
            storage_key=key,
            size_bytes=size,
        ).id


def test_a_worker_killed_mid_download_leaves_no_corrupt_entry(env, s3, inputs, tmp_path):
    dataset_id = big_dataset(env, tmp_path)
    with session_scope(env.sessions) as session:
        key = repo.datasets.get(session=session, dataset_id=dataset_id).storage_key
    settings = host_settings(env, s3, "killed")
    cache = Path(settings["ADVAUDIT_DATA_DIR"]) / "cache"
    worker = env.start_worker("killed", settings).wait_ready()
    job_id = env.submit(inputs["model"], dataset_id, TINY)

    def downloading() -> list[Path]:
        found = list((cache / ".incoming").rglob(f"{key}.*.part")) if cache.is_dir() else []
        return [path for path in found if path.stat().st_size > 0]

    partial = wait_for(downloading, 60, "the dataset's download to start", worker.log_tail, interval_s=0.002)
    worker.kill(signal.SIGKILL)
    assert os.path.getsize(partial[0]) < env.store.size(key)  # killed mid-download …
    assert not (cache / key[:2] / key[2:]).exists()  # … and no entry, complete or not

    again = env.start_worker("killed-again", settings).wait_ready()  # the same host's directory
    job = env.wait_finished(job_id, timeout_s=120)
    assert job.status == "succeeded", env.diagnose([job_id])
    assert (cache / key[:2] / key[2:]).is_file() and not list((cache / ".incoming").rglob("*.part"))
    again.kill()


def test_the_store_restarted_mid_job_loses_nothing(env, s3, inputs):
    server, _ = s3
    worker = env.start_worker("steady", host_settings(env, s3, "steady")).wait_ready()

    # Down for a moment while the job runs: it finishes once the store is back.
    job_id = env.submit(inputs["model"], inputs["digits_train"], LONG | {"limit": 300})
    env.wait_until(job_id, lambda job: job.progress > 0.05, 60, "to make progress")
    server.stop()
    time.sleep(1.0)
    server.start()
    job = env.wait_finished(job_id, timeout_s=120)
    assert job.status == "succeeded", env.diagnose([job_id])

    # Still down when the results go back: the job fails saying so, and a rerun with the store back succeeds.
    job_id = env.submit(inputs["model"], inputs["digits_train"], QUICK)
    env.wait_until(job_id, lambda job: job.status == "running", 60, "to start")
    server.stop()
    failed = env.wait_finished(job_id, timeout_s=120)
    server.start()
    assert failed.status == "failed" and "artifact store s3://" in failed.error, failed.error
    assert "Could not connect" in failed.error
    rerun = env.wait_finished(env.submit(inputs["model"], inputs["digits_train"], TINY), timeout_s=120)
    assert rerun.status == "succeeded", env.diagnose([rerun.id])
    with session_scope(env.sessions) as session:  # everything stored before the outage is still there
        keys = [a.storage_key for a in repo.results.list_artifacts(session=session, job_id=job.id)]
        keys.append(repo.models.get(session=session, model_id=inputs["model"]).storage_key)
    assert all(env.store.exists(key) for key in keys)
    worker.kill()
