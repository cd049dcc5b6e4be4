"""`advaudit serve` enforces job time limits, ends hung and poison jobs, and cleans their scratch folders."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime

import httpx
import pytest

from services.checkpoints import demo_model_path
from tests.support.builders import write_faulty_model
from tests.support.serve_process import serving

pytestmark = pytest.mark.timeout(300)

LIMIT_S, GRACE_S = 6, 2
ENV = {
    "ADVAUDIT_JOB_TIME_LIMIT_S": str(LIMIT_S),
    "ADVAUDIT_JOB_KILL_GRACE_S": str(GRACE_S),
    "ADVAUDIT_JOB_MAX_ATTEMPTS": "2",
    "ADVAUDIT_JOB_LEASE_S": "4",
    "ADVAUDIT_DEVICE": "cpu",
}
# FGSM only, like LONG: each job here runs under a 6 s time limit, the limits are what is tested
SMALL = {"batch_size": 8, "eps": [0, 8 / 255], "attacks": "fgsm", "cam": "none", "triptychs": 0, "limit": 32}
LONG = {
    "batch_size": 16,
    "eps": [k / 255 for k in range(60)],
    "attacks": "fgsm",
    "cam": "none",
    "triptychs": 0,
}


def _wait(api: httpx.Client, job_id: int, condition, timeout_s: float, what: str) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{job_id}").json()
        if condition(job):
            return job
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s} s waiting for job {job_id} {what}: {job}")


def _finished(api: httpx.Client, job_id: int, timeout_s: float = 120) -> dict:
    return _wait(
        api, job_id, lambda job: job["status"] in ("succeeded", "failed", "cancelled"), timeout_s, "to finish"
    )


def _seconds(later: str, earlier: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def _upload(api: httpx.Client, path, name: str) -> dict:
    with open(path, "rb") as handle:
        response = api.post(
            "/models", files={"file": (path.name, handle)}, data={"name": name, "input_shape": "1,32,32"}
        )
    assert response.status_code == 201, response.text
    return response.json()


def test_hung_and_poison_jobs_end_and_the_queue_moves_on(tmp_path):
    system_temp = tmp_path / "tmp"
    system_temp.mkdir()
    with serving(tmp_path / "data", ENV | {"TMPDIR": str(system_temp)}) as served:
        api = httpx.Client(base_url=f"{served.url}/api/v1", timeout=30)
        hangs = _upload(api, write_faulty_model(tmp_path / "hangs.pt", "hangs"), "hangs")
        steady = _upload(api, write_faulty_model(tmp_path / "steady.pt", "raises"), "steady")
        demo = _upload(api, demo_model_path("gap-cnn"), "gap")
        digits = api.get("/datasets", params={"name": "digits"}).json()["data"][0]

        def submit(model: dict, config: dict) -> int:
            response = api.post(
                "/jobs", json={"model_id": model["id"], "dataset_id": digits["id"], "config": config}
            )
            assert response.status_code == 201, response.text
            return response.json()["id"]

        # A forward pass that never returns: failed at the limit, and the job queued behind it runs.
        hung_id, behind_id = submit(hangs, SMALL), submit(demo, SMALL)
        hung = _finished(api, hung_id)
        assert hung["status"] == "failed" and hung["error"].startswith(
            f"exceeded the time limit of {LIMIT_S} s"
        )
        overrun = _seconds(hung["finished_at"], hung["started_at"]) - LIMIT_S
        print(f"embedded: hung job stopped {overrun:.2f} s past its {LIMIT_S} s limit")
        assert 0 <= overrun <= GRACE_S + 1 + 2.0
        behind = _finished(api, behind_id)
        assert behind["status"] == "succeeded", behind

        # A job whose pool process is killed every time it runs (the OOM killer): failed after two attempts.
        poison_id = submit(demo, LONG)
        for attempt in (1, 2):
            running = _wait(
                api,
                poison_id,
                lambda job, a=attempt: (
                    job["status"] == "running" and job["attempts"] == a and job["progress"] > 0
                ),
                120,
                f"to run attempt {attempt}",
            )
            os.kill(int(running["worker_host"].rsplit(":", 1)[1]), signal.SIGKILL)
        poison = _finished(api, poison_id)
        assert poison["status"] == "failed" and poison["attempts"] == 2, poison
        assert "died or was killed 2 times" in poison["error"] and "signal 9 (SIGKILL)" in poison["error"]

        # Error messages name what the user registered, never the server's paths.
        failing = _finished(api, submit(steady, SMALL))
        assert (
            failing["error"]
            == "the model's forward raised RuntimeError: forward refuses batches larger than 2"
        )
        assert str(served.data_dir) not in failing["error"]

        # Killed attempts could not remove their folders: the sweep and the next job's start did.
        scratch = served.data_dir / "scratch"
        deadline = time.monotonic() + 30
        while any(scratch.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert list(scratch.iterdir()) == []
        assert list(system_temp.glob("advaudit-job-*")) == []  # nothing goes to the system's temp directory
