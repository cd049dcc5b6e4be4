"""/api/v1/audits: define, validate (4xx, nothing written), change, delete, run now, runs, new-version trigger."""

from __future__ import annotations

from dataclasses import fields

import pytest

from api.audit_schemas import AuditThresholds
from services.audit_verdict import THRESHOLD_FLOOR, Thresholds
from tests.support import api as helpers
from tests.support.api import API
from worker.audit_runs import AuditContext, finalize_run, launch_run

pytestmark = pytest.mark.timeout(120)

CONFIG = {"eps": [0, "2/255", "8/255"], "targeted": "next", "cam": "none", "triptychs": 0, "device": "cpu"}


class RecordingDispatch:
    def __init__(self, error: Exception | None = None) -> None:
        self.run_ids: list[int] = []
        self.error = error

    def __call__(self, run_id: int) -> None:
        if self.error is not None:
            raise self.error
        self.run_ids.append(run_id)


@pytest.fixture
def dispatch(app) -> RecordingDispatch:
    app.state.audit_dispatch = RecordingDispatch()
    return app.state.audit_dispatch


@pytest.fixture
def body(gap_model, npz_dataset):
    """A valid AuditCreate body for the registered gap model on the npz dataset, with `fields` changed."""

    def make(**fields) -> dict:
        return {
            "name": "nightly",
            "model_name": gap_model["name"],
            "dataset_id": npz_dataset["id"],
            "config": CONFIG,
            "cron": "0 3 * * 1",
            "timezone": "Europe/Paris",
            **fields,
        }

    return make


@pytest.fixture
def create(client, body):
    def make(**fields) -> dict:
        response = client.post(f"{API}/audits", json=body(**fields))
        assert response.status_code == 201, response.text
        return response.json()

    return make


def test_create_read_and_list(client, create):
    audit = create(webhook_url="https://hooks.example.com/a")
    assert audit["baseline"] == "previous" and audit["baseline_job_id"] is None
    assert audit["thresholds"] == {
        "clean_accuracy_drop_pp": 2.0,
        "accuracy_drop_pp": 5.0,
        "worst_case_drop_pp": 5.0,
        "robust_auc_drop_pp": 3.0,
        "target_success_rise_pp": 5.0,
        "cam_drift_rise": 0.1,
        "transfer_worst_case_drop_pp": 5.0,
    }
    assert audit["config"]["eps"] == [0.0, 2 / 255, 8 / 255] and audit["config"]["targeted"] == "next"
    assert audit["next_run_at"].endswith("Z") or "+00:00" in audit["next_run_at"]
    assert audit["last_run"] is None and audit["last_verdict"] is None and audit["enabled"]
    assert client.get(f"{API}/audits/{audit['id']}").json() == audit
    listing = client.get(f"{API}/audits").json()
    assert listing["count"] == 1 and listing["data"][0]["id"] == audit["id"]
    assert client.get(f"{API}/audits", params={"enabled": "false"}).json()["count"] == 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "61 * * * *"}, "outside 0…59"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"timezone": None}, "explicit time zone"),
        ({"cron": None, "timezone": None, "interval_s": 30}, "≥ 60"),
        ({"model_ids": [1]}, "exactly one model selector"),
        ({"model_name": None}, "exactly one model selector"),
        ({"model_name": None, "model_ids": [999]}, "model 999 does not exist"),
        ({"model_name": "nope"}, "no model named 'nope'"),
        ({"dataset_id": 999}, "dataset_id 999"),
        ({"thresholds": {"accuracy_drop_pp": -1}}, "accuracy_drop_pp"),
        ({"thresholds": {"accuracy": 5}}, "accuracy"),
        ({"webhook_url": "ftp://example.com/x"}, "webhook_url"),
        ({"webhook_url": "http://a..b/"}, "invalid host name 'a..b'"),
        ({"webhook_url": "http://[::1/x"}, "is not a valid URL"),
        ({"webhook_url": "http://127.0.0.1:9/hook"}, "loopback address"),
        ({"webhook_url": "http://localhost/hook"}, "loopback address"),
        ({"webhook_url": "http://169.254.169.254/latest/meta-data"}, "link-local address"),
        ({"webhook_url": "http://10.0.0.8/hook"}, "ADVAUDIT_WEBHOOK_ALLOW_PRIVATE=true"),
        ({"thresholds": {"cam_drift_rise": 2.5}}, "cam_drift_rise"),
        ({"model_name": None, "model_ids": [1], "run_on_new_version": True}, "needs a model_name"),
        ({"baseline_job_id": 12}, "job 12 does not exist"),
        ({"config": {"eps": "0,2"}}, "outside [0, 1]"),
        ({"config": {"sweep": 1}}, "unknown option"),
    ],
)
def test_bad_input_is_a_422_problem_and_writes_nothing(client, body, fields, message):
    response = client.post(f"{API}/audits", json=body(**fields))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert message in response.json()["detail"]
    assert client.get(f"{API}/audits").json()["count"] == 0


def test_private_webhook_targets_are_allowed_by_the_setting(client, app, create):
    app.state.settings.webhook_allow_private = True
    audit = create(webhook_url="http://127.0.0.1:9000/hook")
    assert audit["webhook_url"] == "http://127.0.0.1:9000/hook"


def test_the_api_thresholds_are_the_verdicts_own():
    """Defaults and bounds come from services.audit_verdict.Thresholds: one rule, written once."""
    schema = AuditThresholds.model_json_schema()["properties"]
    assert set(schema) == {item.name for item in fields(Thresholds)}
    for name, prop in schema.items():
        number = next(option for option in prop["anyOf"] if option["type"] == "number")
        assert (prop["default"], number["minimum"], number["maximum"]) == (
            getattr(Thresholds(), name),
            THRESHOLD_FLOOR,
            Thresholds.ceiling(name),
        )


def test_a_duplicate_name_is_409(client, body, create):
    create()
    response = client.post(f"{API}/audits", json=body())
    assert response.status_code == 409 and "exists already" in response.json()["detail"]


def test_patch_changes_the_schedule_and_refuses_bad_changes(client, create):
    audit = create()
    changed = client.patch(
        f"{API}/audits/{audit['id']}",
        json={"interval_s": 3600, "enabled": False, "thresholds": {"accuracy_drop_pp": 2}},
    )
    assert changed.status_code == 200, changed.text
    changed = changed.json()
    assert (changed["cron"], changed["timezone"], changed["interval_s"]) == (None, None, 3600)
    assert changed["next_run_at"] is None  # disabled
    assert changed["thresholds"]["accuracy_drop_pp"] == 2 and changed["thresholds"]["robust_auc_drop_pp"] == 3
    bad = client.patch(f"{API}/audits/{audit['id']}", json={"cron": "* * *", "timezone": "UTC"})
    assert bad.status_code == 422 and "needs 5" in bad.json()["detail"]
    assert client.get(f"{API}/audits/{audit['id']}").json()["interval_s"] == 3600  # unchanged
    assert client.patch(f"{API}/audits/{audit['id']}", json={"enabled": None}).status_code == 422
    assert client.patch(f"{API}/audits/{audit['id']}", json={"name": "x", "shape": 1}).status_code == 422


def test_delete_removes_the_audit_and_its_runs(client, create, dispatch):
    audit = create()
    client.post(f"{API}/audits/{audit['id']}/run")
    assert client.delete(f"{API}/audits/{audit['id']}").status_code == 204
    assert client.get(f"{API}/audits/{audit['id']}").status_code == 404
    assert client.get(f"{API}/audits/{audit['id']}/runs").status_code == 404


def _worker_context(app, sent_jobs: list) -> AuditContext:
    return AuditContext(
        sessions=app.state.sessions,
        send_job=lambda job: sent_jobs.append(job.id),
        send_webhook=lambda run_id: None,
    )


def test_run_now_then_the_runs_timeline_and_diff_table(client, app, create, dispatch):
    audit = create()
    accepted = client.post(f"{API}/audits/{audit['id']}/run")
    assert accepted.status_code == 202, accepted.text
    run = accepted.json()
    assert (run["status"], run["trigger"], run["verdict"]) == ("pending", "manual", None)
    assert dispatch.run_ids == [run["id"]] and run["slot"].startswith("manual:")
    jobs: list[int] = []
    context = _worker_context(app, jobs)
    for _ in range(2):  # a baseline run, then a passing one against it
        run_id = run["id"] if not jobs else client.post(f"{API}/audits/{audit['id']}/run").json()["id"]
        launch_run(run_id, context)
        helpers.run_job(app, jobs[-1])
        finalize_run(run_id, context)
    runs = client.get(f"{API}/audits/{audit['id']}/runs").json()
    assert runs["count"] == 2 and [r["verdict"] for r in runs["data"]] == ["passed", "baseline"]
    latest = runs["data"][0]
    assert latest["jobs"][0]["job_id"] == jobs[-1] and latest["jobs"][0]["status"] == "succeeded"
    assert latest["jobs"][0]["report_url"] == f"/api/v1/jobs/{jobs[-1]}/report"
    assert latest["clean_accuracy"] is not None and latest["robust_auc"] is not None
    assert latest["baseline_job_ids"] == [jobs[0]] and latest["regressed_metrics"] == 0
    [comparison] = latest["comparisons"]
    assert comparison["candidate"]["job_id"] == jobs[1] and comparison["baseline"]["job_id"] == jobs[0]
    eps_rows = [row for row in comparison["rows"] if row["metric"] == "accuracy"]
    assert [row["eps_255"] for row in eps_rows] == pytest.approx([0, 2, 8])
    assert all(row["delta"] == 0 for row in comparison["rows"] if row["delta"] is not None)  # same model
    assert latest["webhook"] == {"status": None, "attempts": 0, "error": None, "last_attempt_at": None}
    assert client.get(f"{API}/audits/{audit['id']}/runs/{latest['id']}").json() == latest
    listed = client.get(f"{API}/audits").json()["data"][0]
    assert listed["last_verdict"] == "passed" and listed["last_run"]["id"] == latest["id"]
    finished = client.get(
        f"{API}/audits/{audit['id']}/runs", params={"status": "finished", "limit": 1}
    ).json()
    assert finished["count"] == 2 and len(finished["data"]) == 1


def test_run_now_with_the_broker_down_is_503_and_records_nothing(client, app, create):
    app.state.audit_dispatch = RecordingDispatch(ConnectionError("broker down"))
    audit = create()
    response = client.post(f"{API}/audits/{audit['id']}/run")
    assert response.status_code == 503 and "nothing was recorded" in response.json()["detail"]
    assert client.get(f"{API}/audits/{audit['id']}/runs").json()["count"] == 0


def test_registering_a_new_version_triggers_the_audits_that_follow_it(client, gap_model, npz_dataset, create):
    following = create(run_on_new_version=True)
    create(name="scheduled-only")
    upload = helpers.upload_model(
        client,
        gap_model["name"],
        helpers.demo_bytes("gap-cnn-fragile"),
        "gap-cnn-fragile.pt",
        dataset_id=npz_dataset["id"],
    )
    assert upload.status_code == 201, upload.text
    new_version = upload.json()
    runs = client.get(f"{API}/audits/{following['id']}/runs").json()["data"]
    assert [(r["trigger"], r["status"], r["target_model_id"]) for r in runs] == [
        ("new_version", "pending", new_version["id"])
    ]
    assert runs[0]["slot"] == f"version:{new_version['id']}"
    assert client.get(f"{API}/audits").json()["data"][0]["last_run"] is None  # "scheduled-only": untouched
    again = helpers.upload_model(
        client,
        gap_model["name"],
        helpers.demo_bytes("gap-cnn-fragile"),
        "gap-cnn-fragile.pt",
        dataset_id=npz_dataset["id"],
    )
    assert again.status_code == 200  # the same file again: no new version, no new run
    assert client.get(f"{API}/audits/{following['id']}/runs").json()["count"] == 1


def test_unknown_audits_and_runs_are_404(client, create):
    assert client.get(f"{API}/audits/5").status_code == 404
    audit = create()
    assert client.get(f"{API}/audits/{audit['id']}/runs/77").status_code == 404
    assert client.post(f"{API}/audits/9/run").status_code == 404
