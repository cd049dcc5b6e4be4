"""POST/GET /datasets: the built-in digits, npz and ImageFolder zip uploads, de-duplication and names."""

from __future__ import annotations

from tests.support import api as helpers
from tests.support.api import API


def test_digits_is_registered_at_start_up(client):
    page = client.get(f"{API}/datasets").json()
    assert page["count"] == 1
    digits = page["data"][0]
    assert digits["name"] == "digits" and digits["format"] == "digits" and digits["source"] == "digits"
    assert digits["num_samples"] == 360 and digits["input_shape"] == [1, 32, 32]
    assert digits["num_classes"] == 10
    assert client.get(f"{API}/datasets/{digits['id']}").json() == digits


def test_digits_is_registered_once_across_restarts(app, settings, enqueue):
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.support.api import FakeBroker

    for _ in range(2):
        app = create_app(settings, enqueue=enqueue, broker=FakeBroker(), listen_host="::1")
        with TestClient(app) as client:
            assert client.get(f"{API}/datasets").json()["count"] == 1


def test_npz_upload(client, app):
    data = helpers.npz_bytes(n=12, shape=(3, 8, 8), classes=4)
    response = helpers.upload_dataset(client, "rgb", data, "rgb.npz")
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["format"] == "npz" and dataset["num_samples"] == 12 and dataset["input_shape"] == [3, 8, 8]
    assert dataset["num_classes"] == 4 and dataset["source"] == "rgb.npz"
    assert dataset["size_bytes"] == len(data)
    assert app.state.store.exists(dataset["sha256"])


def test_image_folder_zip_upload_keeps_class_names(client):
    response = helpers.upload_dataset(client, "folders", helpers.image_folder_zip(), "folders.zip")
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["format"] == "imagefolder-zip" and dataset["class_names"] == ["a", "b"]
    assert dataset["num_samples"] == 6 and dataset["input_shape"] == [1, 8, 8]
    resized = helpers.upload_dataset(
        client, "folders16", helpers.image_folder_zip(), "folders.zip", image_size=16
    )
    assert resized.status_code == 201 and resized.json()["input_shape"] == [1, 16, 16]


def test_reupload_under_the_same_name_returns_the_record_with_200(client):
    data = helpers.npz_bytes()
    first = helpers.upload_dataset(client, "tiny", data)
    again = helpers.upload_dataset(client, "tiny", data)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    clash = helpers.upload_dataset(client, "tiny", helpers.npz_bytes(seed=1))
    assert clash.status_code == 409 and "already exists" in clash.json()["detail"]
    other_name = helpers.upload_dataset(client, "tiny-copy", data)
    assert other_name.status_code == 201 and other_name.json()["sha256"] == first.json()["sha256"]


def test_image_size_is_refused_for_npz(client):
    response = helpers.upload_dataset(client, "x", helpers.npz_bytes(), image_size=16)
    assert response.status_code == 422 and "ImageFolder" in response.json()["detail"]


def test_list_filters_by_name_and_unknown_is_404(client, npz_dataset):
    page = client.get(f"{API}/datasets", params={"name": "tiny"}).json()
    assert page["count"] == 1 and page["data"][0]["id"] == npz_dataset["id"]
    response = client.get(f"{API}/datasets/4242")
    assert response.status_code == 404 and response.json()["detail"] == "dataset 4242 does not exist"
