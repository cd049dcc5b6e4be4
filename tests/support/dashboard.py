"""Dashboard test helpers: page data, a job finished in-process, the new-audit form, a recording launch dispatch,
and audit runs judged in-process as the worker would judge them."""

from __future__ import annotations

import json
import re

from tests.support import api as helpers
from tests.support.api import API
from tests.support.transfers import run_transfer
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
    transfers: list[int] = []
    context = AuditContext(
        sessions=app.state.sessions,
        send_job=lambda job: jobs.append(job.id),
        send_webhook=lambda run_id: None,
        send_transfer=lambda job: transfers.append(job.id),
    )
    assert launch_run(run_id, context) == "running"
    for job_id in jobs:
        assert helpers.run_job(app, job_id) == "succeeded"
    for transfer_id in transfers:  # audits with transfer sources
        assert run_transfer(app, transfer_id) == "succeeded"
    assert finalize_run(run_id, context) is not None


HTML = {"Accept": "text/html"}


def embedded(html: str, element_id: str):
    """The JSON a page embeds in its `<script type="application/json" id=element_id>`."""
    match = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', html, re.S)
    assert match, f"no #{element_id} data in the page"
    return json.loads(match.group(1))


SMALL_CONFIG = {
    "eps": [0, "4/255", "16/255"],
    "targeted": "next",
    "batch_size": 8,
    "device": "cpu",
    "cam_samples": 4,
    "triptychs": 2,
}


def finish_job(client, app, model: dict, dataset: dict, **overrides) -> dict:
    """Submit through the API and run the job in-process, as the worker would."""
    response = client.post(
        f"{API}/jobs",
        json={"model_id": model["id"], "dataset_id": dataset["id"], "config": SMALL_CONFIG | overrides},
    )
    assert response.status_code == 201, response.text
    assert helpers.run_job(app, response.json()["id"]) == "succeeded"
    return client.get(f"{API}/jobs/{response.json()['id']}").json()


FORM = {
    "name": "nightly digits",
    "selector": "name",
    "model_name": MODEL_NAME,
    "schedule": "cron",
    "cron": "0 3 * * 1",
    "timezone": "Europe/Paris",
    "interval": "1d",
    "eps": "0,2/255,8/255",
    "targeted": "class",
    "target_class": "3",
    "targeted_eps": "",
    "cam": "none",
    "cam_eps": "8/255",
    "cam_samples": "4",
    "limit": "64",
    "device": "cpu",
    "precision": "fp32",
    "batch_size": "32",
    "seed": "1",
    "baseline_job_id": "",
    "webhook_url": "https://hooks.example.com/advaudit",
    "clean_accuracy_drop_pp": "1.5",
    "accuracy_drop_pp": "5",
    "worst_case_drop_pp": "3",
    "robust_auc_drop_pp": "",
    "target_success_rise_pp": "5",
    "cam_drift_rise": "0.1",
    "enabled": "1",
    "run_on_new_version": "1",
}


def audits(client) -> list[dict]:
    """Every audit, as the API lists them."""
    return client.get(f"{API}/audits").json()["data"]
