"""Finished jobs (run in-process by worker.runner): report, artifacts, cancel/rerun afterwards, compare."""

from __future__ import annotations

import json

import pytest

from services.checkpoints import load_model
from services.datasets import load_dataset
from services.evaluation import evaluate
from services.specs import EvaluationConfig
from tests.support import api as helpers
from tests.support.api import API

CONFIG = {
    "eps": [0, "4/255", "16/255"],
    "targeted": "next",
    "batch_size": 8,
    "device": "cpu",
    "cam_samples": 4,
    "triptychs": 1,
}


def _finished_job(client, app, model: dict, dataset: dict, **overrides) -> dict:
    response = client.post(
        f"{API}/jobs",
        json={"model_id": model["id"], "dataset_id": dataset["id"], "config": CONFIG | overrides},
    )
    assert response.status_code == 201, response.text
    assert helpers.run_job(app, response.json()["id"]) == "succeeded"
    return client.get(f"{API}/jobs/{response.json()['id']}").json()


@pytest.fixture
def finished(client, app, gap_model, npz_dataset) -> dict:
    return _finished_job(client, app, gap_model, npz_dataset)


def test_report_is_exactly_the_stored_report_json(client, app, finished, tmp_path):
    assert finished["status"] == "succeeded" and finished["progress"] == 1 and finished["attempts"] == 1
    response = client.get(f"{API}/jobs/{finished['id']}/report")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    document = response.json()
    stored = client.get(f"{API}/jobs/{finished['id']}/artifacts/report.json")
    assert stored.status_code == 200 and json.loads(stored.content) == document
    # The same evaluation in-process gives the same results (timing and file locations aside).
    (tmp_path / "data.npz").write_bytes(helpers.npz_bytes())
    local = evaluate(
        load_model(helpers.demo_model_path("gap-cnn"), input_shape=(1, 32, 32)),
        load_dataset(tmp_path / "data.npz"),
        EvaluationConfig(**finished["config"]),
    ).to_dict()
    assert document["schema_version"] == local["schema_version"] == 3
    for key in (
        "clean",
        "fgsm",
        "targeted_fgsm",
        "attacks",
        "robust",
        "sanity",
        "per_class",
        "config",
        "architecture",
        "warnings",
    ):
        assert document[key] == local[key], key
    assert document["summary"] == local["summary"]
    assert document["model"]["sha256"] == local["model"]["sha256"]


def test_artifacts_are_listed_and_served_with_their_media_type(client, app, finished):
    listing = client.get(f"{API}/jobs/{finished['id']}/artifacts").json()
    names = [artifact["name"] for artifact in listing]
    assert {"report.json", "outcomes.npz", "accuracy_curve.png"} <= set(names)
    png = next(a for a in listing if a["name"] == "accuracy_curve.png")
    response = client.get(f"{API}/jobs/{finished['id']}/artifacts/accuracy_curve.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == app.state.store.path(png["sha256"]).read_bytes()
    assert len(response.content) == png["size_bytes"]
    npz = client.get(f"{API}/jobs/{finished['id']}/artifacts/outcomes.npz")
    assert (
        npz.headers["content-type"] == "application/octet-stream"
        and "attachment" in npz.headers["content-disposition"]
    )
    missing = client.get(f"{API}/jobs/{finished['id']}/artifacts/nope.png")
    assert missing.status_code == 404 and "no artifact 'nope.png'" in missing.json()["detail"]


def test_finished_jobs_cannot_be_cancelled_but_can_be_rerun(client, finished, enqueue):
    response = client.post(f"{API}/jobs/{finished['id']}/cancel")
    assert response.status_code == 409 and "already succeeded" in response.json()["detail"]
    rerun = client.post(f"{API}/jobs/{finished['id']}/rerun")
    assert rerun.status_code == 201 and rerun.json()["config"] == finished["config"]
    assert enqueue.job_ids[-1] == rerun.json()["id"]


def test_compare_two_models_as_a_leaderboard(client, app, gap_model, npz_dataset):
    dilated = helpers.upload_model(
        client, "dilated", helpers.demo_bytes("dilated-cnn"), "dilated.pt", dataset_id=npz_dataset["id"]
    ).json()
    first = _finished_job(client, app, gap_model, npz_dataset)
    second = _finished_job(client, app, dilated, npz_dataset, eps=[0, "8/255", "16/255"])
    by_ids = client.get(f"{API}/compare", params={"job_ids": f"{first['id']},{second['id']}"})
    assert by_ids.status_code == 200, by_ids.text
    board = by_ids.json()
    assert board["dataset"]["id"] == npz_dataset["id"]
    assert board["eps"] == pytest.approx([0, 4 / 255, 8 / 255, 16 / 255])
    assert board["eps_255"] == pytest.approx([0, 4, 8, 16])
    assert board["warnings"] and "different ε lists" in board["warnings"][0]
    rows = {row["model_name"]: row for row in board["rows"]}
    assert rows["gap"]["accuracy"][2] is None and rows["dilated"]["accuracy"][1] is None
    for row, job in ((rows["gap"], first), (rows["dilated"], second)):
        report = client.get(f"{API}/jobs/{job['id']}/report").json()
        assert row["job_id"] == job["id"] and row["model_version"] == "v1"
        assert row["clean_accuracy"] == report["summary"]["clean_accuracy"]
        assert row["robust_auc"] == report["summary"]["robust_auc"]
        assert [a for a in row["accuracy"] if a is not None] == [p["accuracy"] for p in report["fgsm"]]
        assert row["targeted_policy"] == "next" and row["macs"] == report["summary"]["macs"] > 0
        assert [a for a in row["worst_case_accuracy"] if a is not None] == report["summary"][
            "worst_case_accuracy"
        ]
        assert row["sanity_verdict"] == report["summary"]["sanity_verdict"]
    # 0 and 16/255 are the only ε both swept: 16/255 ranks (no 8/255 in the first job's list)
    assert board["shared_eps"] == pytest.approx([0, 16 / 255])
    assert board["ranking_eps"] == pytest.approx(16 / 255)
    assert board["ranked_by"] == "worst-case accuracy at ε = 16/255, suspicious jobs last"
    ranked = [row["ranking_accuracy"] for row in board["rows"]]
    assert ranked == sorted(ranked, reverse=True)
    assert ranked == [row["worst_case_accuracy"][3] for row in board["rows"]]
    params = {"dataset_id": npz_dataset["id"], "model_ids": f"{gap_model['id']},{dilated['id']}"}
    by_dataset = client.get(f"{API}/compare", params=params).json()
    assert by_dataset["rows"] == board["rows"]
    every_model = client.get(f"{API}/compare", params={"dataset_id": npz_dataset["id"]}).json()
    assert every_model["rows"] == board["rows"]


def test_compare_refuses_mixed_datasets_and_unfinished_jobs(client, app, gap_model, npz_dataset, finished):
    digits = client.get(f"{API}/datasets", params={"name": "digits"}).json()["data"][0]
    other = _finished_job(client, app, gap_model, digits, limit=8)
    mixed = client.get(f"{API}/compare", params={"job_ids": f"{finished['id']},{other['id']}"})
    assert mixed.status_code == 422 and "different datasets" in mixed.json()["detail"]
    body = {"model_id": gap_model["id"], "dataset_id": npz_dataset["id"]}
    queued = client.post(f"{API}/jobs", json=body).json()
    response = client.get(f"{API}/compare", params={"job_ids": f"{finished['id']},{queued['id']}"})
    assert response.status_code == 409 and "queued" in response.json()["detail"]
    assert client.get(f"{API}/compare").status_code == 422
    assert client.get(f"{API}/compare", params={"job_ids": "1,x"}).status_code == 422
    assert client.get(f"{API}/compare", params={"job_ids": "9999"}).status_code == 404
    nothing = client.get(f"{API}/compare", params={"dataset_id": digits["id"], "model_ids": "9999"})
    assert nothing.status_code == 404
