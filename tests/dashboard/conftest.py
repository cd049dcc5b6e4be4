"""Dashboard fixtures: the API test app (SQLite in tmp_path, recording enqueue) and a finished job."""

from __future__ import annotations

import pytest

from tests.api import conftest as api_fixtures
from tests.api import helpers
from tests.api.helpers import API

# The API tests' fixtures, shared: an app on SQLite in tmp_path with a recording enqueue.
migrated_db, settings, enqueue = api_fixtures.migrated_db, api_fixtures.settings, api_fixtures.enqueue
app, client = api_fixtures.app, api_fixtures.client
npz_dataset, gap_model = api_fixtures.npz_dataset, api_fixtures.gap_model

SMALL_CONFIG = {"eps": [0, "4/255", "16/255"], "targeted": "next", "batch_size": 8, "device": "cpu",
                "cam_samples": 4, "triptychs": 2}


def finish_job(client, app, model: dict, dataset: dict, **overrides) -> dict:
    """Submit through the API and run the job in-process, as the worker would."""
    response = client.post(f"{API}/jobs", json={"model_id": model["id"], "dataset_id": dataset["id"],
                                                "config": SMALL_CONFIG | overrides})
    assert response.status_code == 201, response.text
    assert helpers.run_job(app, response.json()["id"]) == "succeeded"
    return client.get(f"{API}/jobs/{response.json()['id']}").json()


@pytest.fixture
def weights_model(client, npz_dataset) -> dict:
    """gap-cnn as safetensors weights + arch: loaded as a Python module, so the CAM audit can hook it."""
    response = helpers.upload_model(client, "gap-w", helpers.demo_safetensors("gap-cnn"), "gap.safetensors",
                                    arch="gap-cnn", num_classes=10, dataset_id=npz_dataset["id"])
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def finished(client, app, weights_model, npz_dataset) -> dict:
    return finish_job(client, app, weights_model, npz_dataset)
