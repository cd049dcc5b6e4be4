"""`advaudit serve` runs transfer jobs: its embedded worker takes the task, the CLI client prints the matrix."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from services.checkpoints import demo_model_path
from tests.support.serve_process import cli, serving


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("serve-transfer")) as served:
        yield served.url


def test_a_transfer_matrix_through_the_embedded_worker(server, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "data.npz", x=rng.random((24, 1, 32, 32), dtype=np.float32), y=rng.integers(0, 10, 24)
    )
    added = cli(server, "datasets", "add", str(tmp_path / "data.npz"), "--name", "noise")
    assert added.returncode == 0, added.stdout + added.stderr
    dataset_id = added.stdout.split()[1].rstrip(":")
    for name in ("gap-cnn", "separable-cnn"):
        model = cli(
            server, "models", "add", str(demo_model_path(name)), "--name", name, "--dataset-id", dataset_id
        )
        assert model.returncode == 0, model.stdout + model.stderr
    run = cli(
        server,
        "transfer",
        "--dataset",
        "noise",
        "--source",
        "gap-cnn",
        "--source",
        "separable-cnn",
        "--target",
        "separable-cnn",
        "--eps",
        "0,8/255",
        "--steps",
        "2",
        "--device",
        "cpu",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert (
        "fgsm: target accuracy % at ε = 0, 8/255" in run.stdout
        and "worst over the other sources" in run.stdout
    )
    transfer_id = run.stdout.split()[2]
    answer = httpx.get(f"{server}/api/v1/transfer/{transfer_id}").json()
    assert answer["status"] == "succeeded" and answer["attempts"] == 1
    assert len(answer["cells"]) == 2 * 1 * 2 * 2 and len(answer["worst_case"]) == 3 * 2
    refused = cli(server, "transfer", "--dataset", "noise", "--source", "gap-cnn", "--target", "missing")
    assert refused.returncode == 2 and "no model named 'missing'" in refused.stdout
