"""Every bad upload → 4xx problem+json with a clear detail, nothing stored, and the server still healthy."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from api.services import validation
from tests.support import api as helpers
from tests.support.api import API, assert_refused, upload_snapshot


@pytest.fixture
def before(client, app) -> tuple:
    return upload_snapshot(client, app)


def test_pickle_payload_is_refused_and_never_runs(client, app, before, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(helpers.Payload(marker), protocol=2)
    response = helpers.upload_model(client, "evil", payload, "evil.pt", input_shape="1,32,32")
    assert_refused(client, app, response, 422, "pickled Python objects", "refused", before=before)
    assert "evil.pt" in response.json()["detail"]
    assert not marker.exists()


def test_torch_save_of_a_pickle_payload_is_refused_and_never_runs(client, app, before, tmp_path):
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"state_dict": helpers.Payload(marker)}, buffer)
    response = helpers.upload_model(client, "evil", buffer.getvalue(), "evil.pth", input_shape="1,32,32")
    assert_refused(client, app, response, 422, before=before)
    assert not marker.exists()


def test_truncated_model_is_refused(client, app, before):
    data = helpers.demo_bytes("gap-cnn")
    response = helpers.upload_model(client, "cut", data[: len(data) // 2], "cut.pt", input_shape="1,32,32")
    assert_refused(client, app, response, 422, "cut.pt", before=before)


def test_truncated_zip_dataset_is_refused(client, app, before):
    data = helpers.image_folder_zip()
    response = helpers.upload_dataset(client, "cut", data[: len(data) // 2], "cut.zip")
    assert_refused(client, app, response, 422, "cut.zip", before=before)


@pytest.mark.parametrize(
    ("kind", "filename"), [("model", "model.exe"), ("model", "model"), ("dataset", "data.csv")]
)
def test_wrong_extension_is_refused_before_reading_the_file(client, app, before, kind, filename):
    upload = helpers.upload_model if kind == "model" else helpers.upload_dataset
    response = (
        upload(client, "x", b"whatever", filename, input_shape="1,32,32")
        if kind == "model"
        else upload(client, "x", b"whatever", filename)
    )
    expected = ".pt2, .pt, .pth, .ts, .torchscript, .safetensors" if kind == "model" else ".npz, .zip"
    assert_refused(client, app, response, 415, expected, "nothing was stored", before=before)


def test_oversized_upload_is_413_with_nothing_stored(client, app, before):
    limit = app.state.settings.max_upload_bytes
    response = helpers.upload_dataset(client, "big", bytes(limit + 1), "big.npz")
    assert_refused(client, app, response, 413, f"limit of {limit} bytes", "nothing was stored", before=before)


def test_oversized_content_length_is_refused_before_the_body_is_read(client, app, before):
    response = client.post(
        f"{API}/datasets",
        content=b"--x--\r\n",
        headers={
            "content-type": "multipart/form-data; boundary=x",
            "content-length": str(10 * app.state.settings.max_upload_bytes),
        },
    )
    assert response.status_code == 413


def test_zip_with_path_traversal_is_refused(client, app, before):
    data = helpers.image_folder_zip({"a/0.png": helpers.png_bytes(), "../escape/1.png": helpers.png_bytes()})
    response = helpers.upload_dataset(client, "trav", data, "trav.zip")
    assert_refused(client, app, response, 422, "outside the archive", before=before)


def test_zip_bomb_is_refused(client, app, before):
    response = helpers.upload_dataset(client, "bomb", helpers.zip_bomb(), "bomb.zip")
    assert_refused(client, app, response, 422, "zip bomb", before=before)


def test_npz_with_pickled_objects_is_refused(client, app, before):
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([helpers.Payload("never")], dtype=object), y=np.zeros(1, dtype=np.int64))
    response = helpers.upload_dataset(client, "obj", buffer.getvalue(), "obj.npz")
    assert_refused(client, app, response, 422, "Python objects", before=before)


def test_form_errors_are_422_problems(client, app, before):
    response = helpers.upload_dataset(client, "", helpers.npz_bytes())
    assert_refused(client, app, response, 422, "name", before=before)
    response = helpers.upload_dataset(client, "x", helpers.npz_bytes(), colour="red")
    assert_refused(client, app, response, 422, "colour", before=before)
    response = client.post(f"{API}/datasets", data={"name": "x"})
    assert response.status_code in (415, 422)
    response = client.post(f"{API}/datasets", json={"name": "x"})  # JSON registers by reference only
    assert response.status_code == 422 and "uri" in response.json()["detail"]
    response = client.post(f"{API}/datasets", content=b"text", headers={"content-type": "text/plain"})
    assert response.status_code == 415


def test_a_loader_that_hangs_is_stopped(client, app, before, monkeypatch):
    monkeypatch.setattr(validation, "TARGET", helpers.hang)
    monkeypatch.setattr(validation, "TIMEOUT_S", 0.5)
    response = helpers.upload_dataset(client, "slow", helpers.npz_bytes(), "slow.npz")
    assert_refused(client, app, response, 422, "slow.npz could not be validated", "0.5 s", before=before)


def test_a_loader_that_crashes_is_reported_not_fatal(client, app, before, monkeypatch):
    monkeypatch.setattr(validation, "TARGET", helpers.crash)
    response = helpers.upload_model(
        client, "boom", helpers.demo_bytes("gap-cnn"), "boom.pt", input_shape="1,32,32"
    )
    assert_refused(client, app, response, 422, "boom.pt could not be validated", "crashed", before=before)
