"""Reliability test 1, as a user runs it: HTTP API → Redis → a real Celery worker → PostgreSQL.

The app is built by `create_app` with its real Celery enqueue (no fake); jobs are sent to the API's default
queue, which this module's worker consumes. Uploads, submission, polling, the report, the leaderboard and
bearer-token auth all go through HTTP; only the expected report is computed in-process.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from contracts.settings import Settings
from contracts.tasks import Queue
from db import repositories as repo
from db.session import session_scope
from services.checkpoints import demo_model_path, load_model
from services.datasets import load_dataset
from services.evaluation import evaluate
from services.specs import EvaluationConfig
from tests.support.reports import comparable_report

pytestmark = pytest.mark.timeout(180)

API = "/api/v1"
OCTETS = "application/octet-stream"
INPUT_SHAPE = (1, 32, 32)
CONFIG = {"limit": 48, "eps": [0, "8/255"], "targeted": "next", "cam_samples": 4, "device": "cpu"}
JOB_DEADLINE_S = 60


def _npz_bytes(n: int = 64, seed: int = 7) -> bytes:
    """n random 1×32×32 images with labels 0…9 (more than CONFIG's limit, so the limit is exercised)."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.random((n, *INPUT_SHAPE), dtype=np.float32), y=np.arange(n, dtype=np.int64) % 10)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def worker(service):
    """One worker on the queue the API sends to (`evaluations`, in this session's own Redis database)."""
    service.queue = Queue.EVALUATIONS
    return service.start_worker("api").wait_ready()


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("upload") / "tiny.npz"
    path.write_bytes(_npz_bytes())
    return path


@pytest.fixture(scope="module")
def expected_reports(npz_path) -> dict[str, dict]:
    """What `advaudit evaluate` gives in-process for each demo model on the uploaded file."""
    dataset = load_dataset(npz_path)
    reports = {}
    for name in ("gap-cnn", "dilated-cnn"):
        report = evaluate(
            load_model(demo_model_path(name), input_shape=INPUT_SHAPE), dataset, EvaluationConfig(**CONFIG)
        )
        reports[name] = json.loads(json.dumps(report.to_dict()))
    return reports


def _app_settings(service, tmp_path, auth: str) -> Settings:
    return Settings(
        database_url=service.database_url,
        broker_url=service.broker_url,
        result_backend=service.broker_url,
        artifact_root=service.store.root,
        data_dir=tmp_path / "api-data",
        auth=auth,
        allowed_hosts=["testserver"],
    )


@pytest.fixture
def make_client(service, worker, tmp_path) -> Iterator:
    """`make_client(auth)`: a TestClient on an app with the real Celery broker, started (lifespan) once."""
    clients: list[TestClient] = []

    def make(auth: str) -> TestClient:
        app = create_app(_app_settings(service, tmp_path, auth), listen_host="127.0.0.1")
        client = TestClient(app).__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _upload_model(client, name: str, demo: str, dataset_id: int, headers=None) -> dict:
    data = demo_model_path(demo).read_bytes()
    response = client.post(
        f"{API}/models",
        data={"name": name, "dataset_id": str(dataset_id)},
        files={"file": (f"{demo}.pt", data, OCTETS)},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def _upload_dataset(client, name: str, path, headers=None) -> dict:
    response = client.post(
        f"{API}/datasets",
        data={"name": name},
        files={"file": (path.name, path.read_bytes(), OCTETS)},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def _submit(client, model_id: int, dataset_id: int, headers=None) -> dict:
    response = client.post(
        f"{API}/jobs",
        json={"model_id": model_id, "dataset_id": dataset_id, "config": CONFIG},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued" and job["queue"] == Queue.EVALUATIONS
    return job


def _wait_succeeded(client, service, job_id: int, headers=None) -> dict:
    deadline = time.monotonic() + JOB_DEADLINE_S
    while True:
        response = client.get(f"{API}/jobs/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            assert job["status"] == "succeeded", f"{job}\n{service.diagnose([job_id])}"
            assert job["progress"] == 1.0 and job["attempts"] == 1 and job["error"] is None
            assert job["worker_host"], job  # run by the worker process, not in-process
            return job
        if time.monotonic() > deadline:
            pytest.fail(
                f"job {job_id} not finished after {JOB_DEADLINE_S} s: {job}\n{service.diagnose([job_id])}",
                pytrace=False,
            )
        time.sleep(0.2)


def _report(client, job_id: int, headers=None) -> dict:
    response = client.get(f"{API}/jobs/{job_id}/report", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_upload_submit_report_and_compare_through_the_api(make_client, service, npz_path, expected_reports):
    client = make_client("off")
    health = client.get(f"{API}/health").json()
    assert health["database"]["ok"] and health["broker"]["ok"], health
    assert any(name in health["workers"]["names"] for name in (w.name for w in service.workers)), health

    dataset = _upload_dataset(client, "tiny", npz_path)
    assert dataset["num_samples"] == 64 and dataset["format"] == "npz"
    assert dataset["input_shape"] == list(INPUT_SHAPE)
    gap = _upload_model(client, "gap", "gap-cnn", dataset["id"])
    dilated = _upload_model(client, "dilated", "dilated-cnn", dataset["id"])
    assert gap["input_shape"] == list(INPUT_SHAPE) and gap["format"] == "torchscript"

    jobs = {
        "gap-cnn": _submit(client, gap["id"], dataset["id"]),
        "dilated-cnn": _submit(client, dilated["id"], dataset["id"]),
    }

    for demo, job in jobs.items():
        _wait_succeeded(client, service, job["id"])
        report = _report(client, job["id"])
        assert comparable_report(report) == comparable_report(expected_reports[demo]), demo
        assert report["dataset"]["source"] == "tiny"
        assert service.row_counts(job["id"])["sweep_points"] == 2 * len(CONFIG["eps"])
        names = {item["name"] for item in client.get(f"{API}/jobs/{job['id']}/artifacts").json()}
        assert "report.json" in names
        assert client.get(f"{API}/jobs/{job['id']}/artifacts/report.json").json() == report

    ids = f"{jobs['gap-cnn']['id']},{jobs['dilated-cnn']['id']}"
    response = client.get(f"{API}/compare", params={"job_ids": ids})
    assert response.status_code == 200, response.text
    board = response.json()
    assert board["dataset"]["id"] == dataset["id"] and board["warnings"] == []
    assert board["eps"] == pytest.approx([0, 8 / 255])
    rows = board["rows"]
    assert len(rows) == 2
    assert {row["job_id"] for row in rows} == {job["id"] for job in jobs.values()}
    aucs = [row["robust_auc"] for row in rows]
    assert None not in aucs and aucs == sorted(aucs, reverse=True)
    for row in rows:
        demo = "gap-cnn" if row["model_id"] == gap["id"] else "dilated-cnn"
        assert row["robust_auc"] == pytest.approx(expected_reports[demo]["summary"]["robust_auc"])
    by_dataset = client.get(f"{API}/compare", params={"dataset_id": dataset["id"]}).json()
    assert [row["job_id"] for row in by_dataset["rows"]] == [row["job_id"] for row in rows]


def test_the_same_flow_with_auth_required(make_client, service, npz_path, expected_reports):
    client = make_client("required")
    with session_scope(client.app.state.sessions) as session:
        token = repo.tokens.create_token(session=session, name="e2e")
    auth = {"Authorization": f"Bearer {token}"}

    for method, path in [
        ("get", "/models"),
        ("post", "/models"),
        ("post", "/datasets"),
        ("post", "/jobs"),
        ("get", "/jobs/1"),
        ("get", "/jobs/1/report"),
        ("get", "/compare?job_ids=1"),
    ]:
        response = getattr(client, method)(f"{API}{path}")
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
    wrong = client.get(f"{API}/models", headers={"Authorization": "Bearer not-a-token"})
    assert wrong.status_code == 401

    dataset = _upload_dataset(client, "tiny-auth", npz_path, headers=auth)
    model = _upload_model(client, "gap-auth", "gap-cnn", dataset["id"], headers=auth)
    job = _submit(client, model["id"], dataset["id"], headers=auth)
    assert client.get(f"{API}/jobs/{job['id']}").status_code == 401

    _wait_succeeded(client, service, job["id"], headers=auth)
    report = _report(client, job["id"], headers=auth)
    assert comparable_report(report) == comparable_report(expected_reports["gap-cnn"])
    assert client.get(f"{API}/jobs/{job['id']}/report").status_code == 401
    board = client.get(f"{API}/compare", params={"job_ids": str(job["id"])}, headers=auth)
    assert board.status_code == 200 and [row["job_id"] for row in board.json()["rows"]] == [job["id"]]
