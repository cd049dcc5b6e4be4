"""`advaudit serve` recovers from a killed embedded worker: it starts again and finishes the job it held.

The embedded SQLite broker never hands a lost task back, so this covers both halves of the recovery:
the supervisor restarting the worker, and the worker's periodic sweep queueing the abandoned job again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from services.checkpoints import demo_model_path
from tests.support.serve_process import parent_of, serving, workers

pytestmark = pytest.mark.timeout(300)

LEASE_S = 4  # short, so the abandoned job is swept within seconds (production: 120 s)
# Long enough (several seconds on a 2-core CPU) to be killed in the middle of its sweep.
# FGSM only: a job of a known length, long enough to be interrupted
CONFIG = {
    "eps": [k / 255 for k in range(0, 41)],
    "attacks": "fgsm",
    "targeted": "next",
    "cam": "none",
    "batch_size": 16,
}


def _wait(check, timeout_s: float, what: str, process: subprocess.Popen):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"advaudit serve exited while waiting for {what}: {process.stdout.read()}")
        try:
            value = check()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def test_a_killed_worker_is_restarted_and_its_job_succeeds_on_a_second_attempt(tmp_path):
    env = {
        "ADVAUDIT_JOB_LEASE_S": str(LEASE_S),
        "ADVAUDIT_PROGRESS_INTERVAL_S": "0.2",
        "ADVAUDIT_DEVICE": "cpu",
    }
    with serving(tmp_path, env) as served:
        process, api = served.process, httpx.Client(base_url=f"{served.url}/api/v1", timeout=30)
        with open(demo_model_path("dilated-cnn"), "rb") as handle:
            model = api.post(
                "/models",
                files={"file": ("dilated-cnn.pt", handle)},
                data={"name": "dilated", "input_shape": "1,32,32"},
            ).json()
        digits = api.get("/datasets", params={"name": "digits"}).json()["data"][0]
        job_id = api.post(
            "/jobs", json={"model_id": model["id"], "dataset_id": digits["id"], "config": CONFIG}
        ).json()["id"]

        running = _wait(
            lambda: (job := api.get(f"/jobs/{job_id}").json())["progress"] > 0.05 and job,
            120,
            "the job to be under way",
            process,
        )
        assert running["status"] == "running" and running["attempts"] == 1
        worker_pid = int(running["worker_host"].rsplit(":", 1)[1])  # the pool child running the job
        main_pid = parent_of(worker_pid)  # the worker's main process, which serve supervises
        assert main_pid in workers(process.pid)
        os.kill(main_pid, signal.SIGKILL)  # as the OOM killer would; the supervisor kills what is left of it

        final = _wait(
            lambda: (job := api.get(f"/jobs/{job_id}").json())["status"] in ("succeeded", "failed") and job,
            180,
            "the job to finish after the worker was killed",
            process,
        )
        assert final["status"] == "succeeded", final["error"]
        assert final["attempts"] == 2
        assert int(final["worker_host"].rsplit(":", 1)[1]) != worker_pid  # a new worker process ran it
        report = api.get(f"/jobs/{job_id}/report").json()
        assert report["dataset"]["num_samples"] == 360 and len(report["fgsm"]) == len(CONFIG["eps"])
