"""`advaudit serve` as a new user runs it: embedded worker and SQLite broker, driven by the CLI client."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from services.checkpoints import demo_model_path
from tests.support.serve_process import cli, serving


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("serve")) as served:
        yield served.url, served.data_dir


def test_upload_submit_watch_report_compare(server, tmp_path):
    url, data_dir = server
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "data.npz", x=rng.random((32, 1, 32, 32), dtype=np.float32), y=rng.integers(0, 10, 32)
    )
    added = cli(url, "datasets", "add", str(tmp_path / "data.npz"), "--name", "noise")
    assert added.returncode == 0, added.stdout + added.stderr
    dataset_id = added.stdout.split()[1].rstrip(":")
    job_ids = []
    for name in ("gap-cnn", "dilated-cnn"):
        model = cli(
            url, "models", "add", str(demo_model_path(name)), "--name", name, "--dataset-id", dataset_id
        )
        assert model.returncode == 0, model.stdout + model.stderr
        model_id = model.stdout.split()[1].rstrip(":")
        job = cli(
            url,
            "jobs",
            "submit",
            "--model-id",
            model_id,
            "--dataset-id",
            dataset_id,
            "--eps",
            "0,2/255,8/255",
            "--targeted",
            "next",
            "--cam-samples",
            "4",
            "--wait",
        )
        assert job.returncode == 0, job.stdout + job.stderr
        assert "succeeded" in job.stdout and "accuracy %" in job.stdout
        job_ids.append(job.stdout.split()[1])
    shown = cli(url, "jobs", "show", job_ids[0])
    assert shown.returncode == 0 and "succeeded (100 %)" in shown.stdout
    report = httpx.get(f"{url}/api/v1/jobs/{job_ids[0]}/report").json()
    assert report["schema_version"] == 3 and [p["eps"] for p in report["fgsm"]] == [0.0, 2 / 255, 8 / 255]
    assert report["dataset"]["source"] == "noise"
    compared = cli(url, "compare", *job_ids)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert "gap-cnn" in compared.stdout and "dilated-cnn" in compared.stdout
    assert (data_dir / "advaudit.db").is_file() and (data_dir / "artifacts").is_dir()
    assert json.loads(json.dumps(report))  # the report is plain JSON


def test_bad_input_from_the_client_is_one_line(server, tmp_path):
    url, _ = server
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    result = cli(url, "models", "add", str(bad), "--name", "bad", "--input-shape", "1,32,32")
    assert (
        result.returncode == 2 and result.stdout.startswith("error: 422") and "Traceback" not in result.stdout
    )
    unreachable = cli("http://127.0.0.1:9", "jobs", "show", "1")
    assert unreachable.returncode == 2 and "cannot reach the server" in unreachable.stdout
