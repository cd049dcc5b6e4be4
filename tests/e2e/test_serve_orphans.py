"""No process outlives `advaudit serve`, however it dies: a SIGKILL takes its workers and sandboxes with it."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import httpx
import pytest
import torch
from torch import nn

from services.checkpoints import demo_model_path
from tests.support.serve_process import alive, command, descendants, serving, workers

pytestmark = pytest.mark.timeout(300)

ENV = {"ADVAUDIT_JOB_LEASE_S": "4", "ADVAUDIT_PROGRESS_INTERVAL_S": "0.2", "ADVAUDIT_DEVICE": "cpu"}
# FGSM only: a job of a known length (about a minute), the lifetime of the processes is what is tested
LONG = {
    "eps": [k / 255 for k in range(0, 41)],
    "attacks": "fgsm",
    "targeted": "next",
    "cam": "none",
    "batch_size": 16,
}


class _AlwaysHangs(nn.Module):
    """A checkpoint whose forward never returns: its validation in the sandbox hangs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while x.shape[0] > 0:
            x = x + 0.0
        return x.flatten(1)[:, :10]


def _wait(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if value := check():
                return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def test_a_killed_server_leaves_no_process_and_a_new_one_finishes_its_job(tmp_path):
    data_dir = tmp_path / "data"
    hanging = tmp_path / "hangs.pt"
    torch.jit.save(torch.jit.script(_AlwaysHangs()), str(hanging))
    left: set[int] = set()
    try:
        with serving(data_dir, ENV) as served:
            api = httpx.Client(base_url=f"{served.url}/api/v1", timeout=30)
            with open(demo_model_path("dilated-cnn"), "rb") as handle:
                model = api.post(
                    "/models",
                    files={"file": ("dilated-cnn.pt", handle)},
                    data={"name": "dilated", "input_shape": "1,32,32"},
                ).json()
            digits = api.get("/datasets", params={"name": "digits"}).json()["data"][0]
            job_id = api.post(
                "/jobs", json={"model_id": model["id"], "dataset_id": digits["id"], "config": LONG}
            ).json()["id"]
            _wait(
                lambda: api.get(f"/jobs/{job_id}").json()["progress"] > 0.05, 120, "the job to be under way"
            )

            def upload_hanging() -> None:  # its validation child hangs; the request dies with the server
                with contextlib.suppress(httpx.HTTPError), open(hanging, "rb") as handle:
                    httpx.post(
                        f"{served.url}/api/v1/models",
                        files={"file": ("hangs.pt", handle)},
                        data={"name": "hangs", "input_shape": "1,32,32"},
                        timeout=60,
                    )

            threading.Thread(target=upload_hanging, daemon=True).start()
            before = descendants(served.process.pid)
            _wait(lambda: len(descendants(served.process.pid) - before) >= 1, 30, "the validation child")
            left = descendants(served.process.pid)
            assert len(workers(served.process.pid)) == 2 and len(left) >= 5  # 2 workers, pool child, beat, …

            os.kill(served.process.pid, signal.SIGKILL)  # serve alone, as the OOM killer would
            served.process.wait(timeout=10)
            killed_at = time.monotonic()
            while any(alive(pid) for pid in left) and time.monotonic() - killed_at < 10:
                time.sleep(0.1)
            survivors = {pid for pid in left if alive(pid)}
            assert not survivors, f"processes outlived advaudit serve: {[command(pid) for pid in survivors]}"
            print(
                f"all {len(left)} processes of serve gone {time.monotonic() - killed_at:.2f} s after its SIGKILL"
            )

        with serving(data_dir, ENV) as served:  # the same data directory starts cleanly …
            api = httpx.Client(base_url=f"{served.url}/api/v1", timeout=30)
            final = _wait(
                lambda: (
                    (job := api.get(f"/jobs/{job_id}").json())["status"]
                    in ("succeeded", "failed", "cancelled")
                    and job
                ),
                180,
                "the interrupted job to finish",
            )
            assert (final["status"], final["attempts"]) == ("succeeded", 2), final  # … and finishes the job
    finally:
        for pid in left:  # whatever a failed run left behind must not haunt the rest of the suite
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
