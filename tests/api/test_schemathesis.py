"""Reliability test 8: schemathesis against the OpenAPI schema: no operation ever answers 5xx.

The app runs in-process (ASGI) on SQLite in a temporary folder, with a recording enqueue and auth off.
The demo model, a dataset and two jobs (one succeeded, with artifacts; one queued) are registered first,
so small ids such as 1 and 2 reach real rows; schemathesis also sends garbage multipart uploads, which
must be refused with a 4xx.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from api.main import create_app
from contracts.settings import MIB, Settings
from tests.support import api as helpers
from tests.support.api import FakeBroker, RecordingEnqueue
from tests.support.env import in_ci

try:
    import schemathesis
    from schemathesis.checks import not_a_server_error
except ImportError as error:  # a dev dependency: missing locally → skip, in CI → fail
    if in_ci():
        raise
    pytest.skip(f"schemathesis cannot be imported ({error}); run `make install`", allow_module_level=True)

pytestmark = pytest.mark.timeout(300)

MAX_EXAMPLES = 15


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """An app whose ids 1… are in use: digits + an npz dataset, gap-cnn, a succeeded and a queued job, a queued
    transfer job."""
    data_dir: Path = tmp_path_factory.mktemp("schemathesis") / "data"
    data_dir.mkdir(parents=True)
    settings_ = Settings(
        data_dir=data_dir, auth="off", max_upload_bytes=2 * MIB, allowed_hosts=["testserver"]
    )
    app = create_app(
        settings_,
        enqueue=RecordingEnqueue(),
        broker=FakeBroker(),
        listen_host="127.0.0.1",
        enqueue_transfer=RecordingEnqueue(),
    )
    with TestClient(app) as client:  # runs the lifespan (migrations, digits) once, then registers inputs
        dataset = helpers.upload_dataset(client, "tiny", helpers.npz_bytes())
        assert dataset.status_code == 201, dataset.text
        model = helpers.upload_model(
            client, "gap", helpers.demo_bytes("gap-cnn"), "gap-cnn.pt", dataset_id=dataset.json()["id"]
        )
        assert model.status_code == 201, model.text
        config = {"limit": 8, "eps": [0, "8/255"], "cam_samples": 2, "triptychs": 1, "device": "cpu"}
        body = {"model_id": model.json()["id"], "dataset_id": dataset.json()["id"], "config": config}
        done = client.post(f"{helpers.API}/jobs", json=body)
        assert done.status_code == 201, done.text
        helpers.run_job(app, done.json()["id"])
        assert client.get(f"{helpers.API}/jobs/{done.json()['id']}").json()["status"] == "succeeded"
        queued = client.post(f"{helpers.API}/jobs", json=body)
        assert queued.status_code == 201, queued.text
        ids = {"source_ids": [model.json()["id"]], "target_ids": [model.json()["id"]]}
        transfer = {"dataset_id": dataset.json()["id"], **ids, "config": {"limit": 8, "eps": [0, "8/255"]}}
        assert client.post(f"{helpers.API}/transfer", json=transfer).status_code == 201
    return app


def _openapi_document() -> dict:
    """The app's OpenAPI document, from an app that is never started (in-memory SQLite, throwaway folder).

    Loaded at import so pytest sees one test per operation; `schemathesis.pytest.from_fixture` would
    defer it to a fixture but does not work with pytest 9.
    """
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(
            Settings(data_dir=folder, database_url="sqlite://", allowed_hosts=["testserver"]),
            enqueue=RecordingEnqueue(),
            broker=FakeBroker(),
            listen_host="127.0.0.1",
        )
        document = app.openapi()
        app.state.engine.dispose()
    return document


DOCUMENT = _openapi_document()
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


def _with_upload_filenames(model: str, dataset: str) -> dict:
    """The document with a declared file name per upload, so garbage content reaches the isolated loader.

    Left to itself schemathesis names the part after the format its bytes resemble (`file.png`, `file`),
    which the extension check refuses (415) before any loader sees it; and random model form fields are
    mostly refused before loading too, so here a model upload carries only `name` and a valid input shape.
    """
    document = copy.deepcopy(DOCUMENT)
    for path, filename in (("/models", model), ("/datasets", dataset)):
        content = document["paths"][f"{helpers.API}{path}"]["post"]["requestBody"]["content"]
        body = content["multipart/form-data"]
        disposition = f'form-data; name="file"; filename="{filename}"'
        body["encoding"] = {
            "file": {
                "headers": {"Content-Disposition": {"schema": {"type": "string"}, "example": disposition}}
            }
        }
        if path == "/models":
            form = body["schema"]
            form["properties"] = {
                "file": form["properties"]["file"],
                "name": form["properties"]["name"],
                "input_shape": {"type": "string", "enum": ["1,32,32", "3,8,8"]},
            }
            form["required"] = ["file", "name", "input_shape"]
    return document


def _uploads(model: str, dataset: str):
    return schemathesis.openapi.from_dict(_with_upload_filenames(model, dataset)).include(
        method="POST", path_regex=r"/(models|datasets)$"
    )


schema = schemathesis.openapi.from_dict(DOCUMENT)


@schema.parametrize()
@FUZZ
def test_no_operation_answers_with_a_server_error(case, app):
    case.call_and_validate(checks=[not_a_server_error], app=app)


@_uploads("model.pt", "data.npz").parametrize()
@FUZZ
def test_garbage_pt_and_npz_uploads_are_refused_without_a_server_error(case, app):
    case.call_and_validate(checks=[not_a_server_error], app=app)


@_uploads("weights.safetensors", "images.zip").parametrize()
@FUZZ
def test_garbage_safetensors_and_zip_uploads_are_refused_without_a_server_error(case, app):
    case.call_and_validate(checks=[not_a_server_error], app=app)


@_uploads("model.pt2", "data.npz").parametrize()
@FUZZ
def test_garbage_pt2_uploads_are_refused_without_a_server_error(case, app):
    case.call_and_validate(checks=[not_a_server_error], app=app)


@pytest.mark.parametrize("resource", ["models", "datasets", "jobs", "transfer"])
def test_an_offset_beyond_64_bits_is_a_422_not_a_500(app, resource):
    """Found by schemathesis: `offset` had no upper bound, so SQLite raised OverflowError (a 500)."""
    response = TestClient(app).get(f"{helpers.API}/{resource}", params={"offset": 2**63})
    assert response.status_code == 422, response.text
