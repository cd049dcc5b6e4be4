"""POST/GET/DELETE /models: validated uploads, de-duplication, versions, deletion rules."""

from __future__ import annotations

from services.files import sha256_file
from tests.support import api as helpers
from tests.support.api import API


def test_upload_records_what_the_loader_found(client, npz_dataset, app):
    data = helpers.demo_bytes("gap-cnn")
    response = helpers.upload_model(client, "gap", data, "gap-cnn.pt", dataset_id=npz_dataset["id"])
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["name"] == "gap" and model["version"] == "v1"
    assert model["format"] == "torchscript" and model["num_classes"] == 10
    assert model["input_shape"] == [1, 32, 32] and model["size_bytes"] == len(data)
    assert model["sha256"] == sha256_file(helpers.demo_model_path("gap-cnn"))
    assert app.state.store.exists(model["sha256"])
    assert helpers.leftover_uploads(app.state.settings.data_dir) == []
    assert client.get(f"{API}/models/{model['id']}").json() == model


def test_class_names_come_from_the_dataset(client):
    digits = client.get(f"{API}/datasets", params={"name": "digits"}).json()["data"][0]
    response = helpers.upload_model(client, "gap", helpers.demo_bytes("gap-cnn"), dataset_id=digits["id"])
    assert response.status_code == 201, response.text
    assert response.json()["class_names"] == [str(k) for k in range(10)]


def test_same_file_and_options_returns_the_existing_record_with_200(client):
    data = helpers.demo_bytes("gap-cnn")
    first = helpers.upload_model(client, "gap", data, input_shape="1,32,32")
    again = helpers.upload_model(client, "gap", data, input_shape="1,32,32")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    other = helpers.upload_model(client, "gap", helpers.demo_bytes("dilated-cnn"), input_shape="1,32,32")
    assert other.status_code == 201 and other.json()["version"] == "v2"
    assert client.get(f"{API}/models").json()["count"] == 2


def test_weights_only_checkpoint_needs_its_architecture(client):
    weights = helpers.demo_safetensors("gap-cnn")
    missing = helpers.upload_model(client, "w", weights, "w.safetensors", input_shape="1,32,32")
    assert missing.status_code == 422
    assert "arch" in missing.json()["detail"]
    response = helpers.upload_model(
        client, "w", weights, "w.safetensors", input_shape="1,32,32", arch="gap-cnn"
    )
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "safetensors" and response.json()["arch"] == "gap-cnn"


def test_input_shape_is_required_without_a_dataset(client):
    response = helpers.upload_model(client, "gap", helpers.demo_bytes("gap-cnn"))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "input_shape" in response.json()["detail"]
    for bad in ("1,32", "a,b,c", "0,32,32"):
        response = helpers.upload_model(client, "gap", helpers.demo_bytes("gap-cnn"), input_shape=bad)
        assert response.status_code == 422 and "C,H,W" in response.json()["detail"]


def test_wrong_input_shape_is_refused_with_the_loader_message(client, app):
    response = helpers.upload_model(
        client, "gap", helpers.demo_bytes("gap-cnn"), "gap.pt", input_shape="3,32,32"
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "does not accept" in detail
    assert helpers.leftover_uploads(app.state.settings.data_dir) == []
    assert "/uploads/" not in detail  # the server's temporary path is not shown


def test_list_filters_by_name_and_paginates(client):
    data = helpers.demo_bytes("dilated-cnn")
    helpers.upload_model(client, "a", data, input_shape="1,32,32")
    helpers.upload_model(client, "b", data, input_shape="1,32,32")
    normalised = helpers.upload_model(client, "a", data, input_shape="1,32,32", mean="0.5", std="0.25")
    assert normalised.status_code == 201 and normalised.json()["mean"] == [0.5]
    page = client.get(f"{API}/models", params={"name": "a", "limit": 1}).json()
    assert page["count"] == 2 and len(page["data"]) == 1 and page["data"][0]["version"] == "v2"
    assert client.get(f"{API}/models", params={"limit": 0}).status_code == 422


def test_unknown_model_is_404_problem(client):
    response = client.get(f"{API}/models/999")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "model 999 does not exist"


def test_delete_keeps_a_file_another_record_shares(client, app):
    data = helpers.demo_bytes("gap-cnn")
    first = helpers.upload_model(client, "one", data, input_shape="1,32,32").json()
    second = helpers.upload_model(client, "two", data, input_shape="1,32,32").json()
    assert first["sha256"] == second["sha256"]
    assert client.delete(f"{API}/models/{first['id']}").status_code == 204
    assert app.state.store.exists(first["sha256"])
    assert client.get(f"{API}/models/{first['id']}").status_code == 404
    assert client.delete(f"{API}/models/{second['id']}").status_code == 204
    assert not app.state.store.exists(first["sha256"])


def test_delete_is_refused_while_jobs_use_the_model(client, gap_model, npz_dataset, app):
    job = client.post(f"{API}/jobs", json={"model_id": gap_model["id"], "dataset_id": npz_dataset["id"]})
    assert job.status_code == 201, job.text
    response = client.delete(f"{API}/models/{gap_model['id']}")
    assert response.status_code == 409
    assert "used by 1 job" in response.json()["detail"]
    assert app.state.store.exists(gap_model["sha256"])
