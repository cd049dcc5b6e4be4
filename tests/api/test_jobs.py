"""POST /jobs validation, commit-before-enqueue, broker failure, listing, cancel and rerun."""

from __future__ import annotations

import pytest

from db import repositories as repo
from db.session import session_scope
from tests.support import api as helpers
from tests.support.api import API


def _submit(client, model, dataset, **config):
    body = {"model_id": model["id"], "dataset_id": dataset["id"], "config": config}
    return client.post(f"{API}/jobs", json=body)


@pytest.fixture
def hookable_model(client, npz_dataset) -> dict:
    """gap-cnn as weights + arch, so its layers can host Grad-CAM hooks."""
    response = helpers.upload_model(
        client,
        "gap-w",
        helpers.demo_safetensors(),
        "gap.safetensors",
        arch="gap-cnn",
        dataset_id=npz_dataset["id"],
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_submit_writes_a_queued_job_and_enqueues_its_id(client, gap_model, npz_dataset, enqueue):
    response = _submit(client, gap_model, npz_dataset, eps=[0, "2/255", 0.1], targeted="next", batch_size=8)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued" and job["progress"] == 0
    assert job["attempts"] == 0 and job["error"] is None
    assert job["model_id"] == gap_model["id"] and job["dataset_id"] == npz_dataset["id"]
    assert job["queue"] == "evaluations" and job["created_at"] and job["started_at"] is None
    assert job["config"]["eps"] == [0.0, 2 / 255, 0.1] and job["config"]["targeted"] == "next"
    assert job["config"]["batch_size"] == 8 and job["config"]["cam"] == "auto"
    assert enqueue.job_ids == [job["id"]]
    assert client.get(f"{API}/jobs/{job['id']}").json() == job


def test_cuda_jobs_go_to_the_gpu_queue(client, gap_model, npz_dataset):
    assert _submit(client, gap_model, npz_dataset, device="cuda:0").json()["queue"] == "gpu"
    assert _submit(client, gap_model, npz_dataset, device="cpu").json()["queue"] == "evaluations"


def test_the_row_is_committed_before_enqueue(client, app, gap_model, npz_dataset, enqueue):
    seen = []

    def look_from_a_new_session(job) -> None:
        with session_scope(app.state.sessions) as session:
            row = repo.jobs.get(session=session, job_id=job.id)
            seen.append(None if row is None else (row.id, row.status))

    enqueue.on_send = look_from_a_new_session
    job = _submit(client, gap_model, npz_dataset).json()
    assert seen == [(job["id"], "queued")]


INVALID_CONFIGS = [
    ({"eps": [0, 1.5]}, "outside [0, 1]"),
    ({"eps": ["x/255"]}, "cannot read ε"),
    ({"eps": []}, "empty"),
    ({"cam_eps": 2}, "outside [0, 1]"),
    ({"targeted": "sideways"}, "unknown targeted policy"),
    ({"targeted": "class:10"}, "outside the model's 10 classes"),
    ({"targeted_eps": [0.1]}, "without a targeted policy"),
    ({"precision": "fp8"}, "unknown precision"),
    ({"device": "tpu"}, "unknown device"),
    ({"colour": "red"}, "unknown option(s) colour"),
    ({"batch_size": 0}, "batch_size"),
    ({"eps": None, "seed": -1}, "seed"),
    ({"cam": "features.8"}, "TorchScript"),
    ({"attacks": "fgsm,pgdx"}, "unknown attacks pgdx"),
    ({"attacks": ["square"], "norm": "l2"}, "square is an L∞ attack"),
    ({"loss": "hinge"}, "unknown loss"),
    ({"steps": 0}, "steps"),
    ({"queries": 10**6}, "queries"),
    ({"sanity_tolerance": 1.5}, "sanity_tolerance"),
]


def test_attack_options_are_taken_as_a_list_or_a_comma_separated_string(client, gap_model, npz_dataset):
    as_list = _submit(client, gap_model, npz_dataset, attacks=["fgsm", "bim", "square"], steps=3, queries=50)
    as_text = _submit(client, gap_model, npz_dataset, attacks="pgd, square", loss="dlr", step_size=0.01)
    assert as_list.status_code == 201 and as_text.status_code == 201, (as_list.text, as_text.text)
    assert as_list.json()["config"]["attacks"] == ["fgsm", "bim", "square"]
    assert as_list.json()["config"]["steps"] == 3 and as_list.json()["config"]["queries"] == 50
    assert as_text.json()["config"]["attacks"] == ["pgd", "square"]
    assert as_text.json()["config"]["step_size"] == 0.01


def test_invalid_configs_are_422(client, gap_model, npz_dataset, enqueue):
    for config, phrase in INVALID_CONFIGS:
        response = _submit(client, gap_model, npz_dataset, **config)
        assert response.status_code == 422, (config, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert phrase in response.json()["detail"], (config, response.json()["detail"])
    assert enqueue.job_ids == [] and client.get(f"{API}/jobs").json()["count"] == 0


def test_cam_layer_is_checked_against_the_model(client, app, hookable_model, npz_dataset):
    unknown = _submit(client, hookable_model, npz_dataset, cam="features.99")
    assert unknown.status_code == 422 and "has no layer 'features.99'" in unknown.json()["detail"]
    flat = _submit(client, hookable_model, npz_dataset, cam="pool")
    assert flat.status_code == 422 and "1×1" in flat.json()["detail"]
    good = _submit(client, hookable_model, npz_dataset, cam="features.8")
    assert good.status_code == 201, good.text
    with session_scope(app.state.sessions) as session:  # the check cached the architecture audit
        audit = repo.results.get_architecture_audit(
            session=session, model_sha256=hookable_model["sha256"], input_shape=(1, 32, 32)
        )
        assert audit is not None and any(layer["name"] == "features.8" for layer in audit.document["layers"])
    assert _submit(client, hookable_model, npz_dataset, cam="features.8").status_code == 201


def test_feature_layers_are_checked_against_the_model(client, hookable_model, gap_model, npz_dataset):
    unknown = _submit(client, hookable_model, npz_dataset, feature_layers="features.2,features.99")
    assert unknown.status_code == 422 and "has no layer 'features.99'" in unknown.json()["detail"]
    flat = _submit(client, hookable_model, npz_dataset, feature_layers="classifier")
    assert flat.status_code == 422 and "(N, C, H, W)" in flat.json()["detail"]
    script = _submit(client, gap_model, npz_dataset, feature_layers="features.2")  # TorchScript: no hooks
    assert script.status_code == 422 and "TorchScript" in script.json()["detail"]
    good = _submit(client, hookable_model, npz_dataset, feature_layers="features.2, features")
    assert good.status_code == 201, good.text
    assert good.json()["config"]["feature_layers"] == "features.2,features"


def test_model_and_dataset_must_fit(client, gap_model):
    rgb = helpers.upload_dataset(client, "rgb", helpers.npz_bytes(shape=(3, 32, 32))).json()
    response = _submit(client, gap_model, rgb)
    assert response.status_code == 422 and "(1, 32, 32)" in response.json()["detail"]
    many = helpers.upload_dataset(client, "many", helpers.npz_bytes(n=24, classes=12)).json()
    response = _submit(client, gap_model, many)
    assert response.status_code == 422 and "12 classes" in response.json()["detail"]
    response = client.post(f"{API}/jobs", json={"model_id": 999, "dataset_id": rgb["id"]})
    assert response.status_code == 422 and "model_id 999" in response.json()["detail"]


def test_broker_failure_marks_the_job_and_answers_503(client, app, gap_model, npz_dataset, enqueue):
    def broker_down(job) -> None:
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

    enqueue.on_send = broker_down
    response = _submit(client, gap_model, npz_dataset)
    assert response.status_code == 503
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert "broker unavailable" in problem["detail"] and "rerun" in problem["detail"]
    job = client.get(f"{API}/jobs/{problem['job_id']}").json()
    assert job["status"] == "failed" and job["error"].startswith("broker unavailable: ConnectionError")


def test_list_filters_and_counts(client, gap_model, npz_dataset):
    ids = [_submit(client, gap_model, npz_dataset).json()["id"] for _ in range(3)]
    client.post(f"{API}/jobs/{ids[0]}/cancel")
    page = client.get(f"{API}/jobs", params={"status": "queued", "limit": 1}).json()
    assert page["count"] == 2 and [job["id"] for job in page["data"]] == [ids[2]]
    assert client.get(f"{API}/jobs", params={"model_id": gap_model["id"]}).json()["count"] == 3
    assert client.get(f"{API}/jobs", params={"dataset_id": npz_dataset["id"] + 100}).json()["count"] == 0
    assert client.get(f"{API}/jobs", params={"status": "lost"}).status_code == 422


def test_cancel_a_queued_job_then_409(client, gap_model, npz_dataset):
    job = _submit(client, gap_model, npz_dataset).json()
    response = client.post(f"{API}/jobs/{job['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = client.post(f"{API}/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    assert client.post(f"{API}/jobs/9999/cancel").status_code == 404


def test_rerun_creates_a_new_job_with_the_same_config(client, gap_model, npz_dataset, enqueue):
    job = _submit(client, gap_model, npz_dataset, eps=[0, 0.05], targeted="random", seed=3).json()
    client.post(f"{API}/jobs/{job['id']}/cancel")
    response = client.post(f"{API}/jobs/{job['id']}/rerun")
    assert response.status_code == 201, response.text
    again = response.json()
    assert again["id"] != job["id"] and again["status"] == "queued"
    assert (again["model_id"], again["dataset_id"], again["config"]) == (
        job["model_id"],
        job["dataset_id"],
        job["config"],
    )
    assert enqueue.job_ids == [job["id"], again["id"]]


def test_report_is_409_until_the_job_succeeded(client, gap_model, npz_dataset):
    job = _submit(client, gap_model, npz_dataset).json()
    response = client.get(f"{API}/jobs/{job['id']}/report")
    assert response.status_code == 409 and "queued" in response.json()["detail"]
    assert client.get(f"{API}/jobs/{job['id']}/artifacts").json() == []
    assert client.get(f"{API}/jobs/{job['id']}/artifacts/report.json").status_code == 404
