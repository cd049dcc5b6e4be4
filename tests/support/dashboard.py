"""Audit test helpers: a recording launch dispatch, and runs judged in-process as the worker would judge them."""

from __future__ import annotations

from tests.support import api as helpers
from tests.support.api import API
from worker.audit_runs import AuditContext, finalize_run, launch_run

MODEL_NAME = "digits-net"
# Small but meaningful: 300 digits are enough for the fragile version's FGSM drop to clear the 5 pp threshold.
AUDIT_CONFIG = {
    "eps": [0, "2/255", "8/255"],
    "targeted": "next",
    "cam": "none",
    "triptychs": 0,
    "limit": 300,
    "batch_size": 100,
    "device": "cpu",
}


class RecordingDispatch:
    """Stands in for the launch-task sender (app.state.audit_dispatch); `error` simulates a broker outage."""

    def __init__(self, error: Exception | None = None) -> None:
        self.run_ids: list[int] = []
        self.error = error

    def __call__(self, run_id: int) -> None:
        if self.error is not None:
            raise self.error
        self.run_ids.append(run_id)


def digits(client) -> dict:
    return client.get(f"{API}/datasets", params={"name": "digits"}).json()["data"][0]


def register_version(client, variant: str, name: str = MODEL_NAME) -> dict:
    """The demo checkpoint `variant` registered as the next version of `name` on the digits input shape."""
    response = helpers.upload_model(
        client, name, helpers.demo_bytes(variant), f"{variant}.pt", dataset_id=digits(client)["id"]
    )
    assert response.status_code == 201, response.text
    return response.json()


def judge(app, run_id: int) -> None:
    """Launch the run, run its jobs and finalize it, as the worker does (no webhook is sent)."""
    jobs: list[int] = []
    context = AuditContext(
        sessions=app.state.sessions,
        send_job=lambda job: jobs.append(job.id),
        send_webhook=lambda run_id: None,
    )
    assert launch_run(run_id, context) == "running"
    for job_id in jobs:
        assert helpers.run_job(app, job_id) == "succeeded"
    assert finalize_run(run_id, context) is not None
