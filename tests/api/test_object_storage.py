"""The API on an S3 store (a real SeaweedFS): uploads, register by reference and its refusals, local files."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from contracts.settings import MIB
from db.s3_store import S3ArtifactStore
from tests.support import api as helpers
from tests.support.api import API, FakeBroker
from tests.support.seaweed import store_settings


@pytest.fixture
def bucket(seaweed) -> str:
    return seaweed.new_bucket()


@pytest.fixture
def s3_client(seaweed, bucket, tmp_path, migrated_db, enqueue):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(migrated_db, data_dir / "advaudit.db")
    settings = store_settings(
        seaweed, bucket, data_dir, auth="off", max_upload_bytes=2 * MIB, allowed_hosts=["testserver"]
    )
    app = create_app(settings, enqueue=enqueue, broker=FakeBroker(), listen_host="127.0.0.1")
    with TestClient(app) as client:
        yield client


def stored_keys(seaweed, bucket) -> list[str]:
    return sorted(item["Key"] for item in seaweed.client().list_objects_v2(Bucket=bucket).get("Contents", []))


def test_an_upload_lands_in_the_bucket_and_its_pages_read_it_back(s3_client, seaweed, bucket):
    store = s3_client.app.state.store
    assert isinstance(store, S3ArtifactStore)
    dataset = helpers.upload_dataset(s3_client, "tiny", helpers.npz_bytes())
    assert dataset.status_code == 201, dataset.text
    model = helpers.upload_model(
        s3_client, "gap", helpers.demo_bytes("gap-cnn"), "gap-cnn.pt", dataset_id=dataset.json()["id"]
    )
    assert model.status_code == 201, model.text
    sha = model.json()["sha256"]
    assert f"artifacts/{sha[:2]}/{sha[2:]}" in stored_keys(seaweed, bucket)
    assert not (s3_client.app.state.settings.data_dir / "artifacts").exists()  # no local store at all
    architecture = s3_client.get(f"{API}/models/{model.json()['id']}/architecture")
    assert architecture.status_code == 200 and architecture.json()["layers"]
    grid = s3_client.get(f"{API}/models/{model.json()['id']}/filters.png")
    assert grid.status_code == 200 and grid.content.startswith(b"\x89PNG")


def test_register_by_reference_validates_and_stores_content_addressed(s3_client, seaweed, bucket):
    data = helpers.npz_bytes(n=20)
    seaweed.client().put_object(Bucket=bucket, Key="imports/big.npz", Body=data)
    response = s3_client.post(
        f"{API}/datasets", json={"name": "by-ref", "uri": f"s3://{bucket}/imports/big.npz"}
    )
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["num_samples"] == 20 and record["sha256"] == hashlib.sha256(data).hexdigest()
    assert f"artifacts/{record['sha256'][:2]}/{record['sha256'][2:]}" in stored_keys(seaweed, bucket)
    again = s3_client.post(
        f"{API}/datasets", data={"name": "by-ref", "uri": f"s3://{bucket}/imports/big.npz"}
    )
    assert again.status_code == 200 and again.json()["id"] == record["id"]  # as a form field too

    seaweed.client().put_object(Bucket=bucket, Key="imports/gap.pt", Body=helpers.demo_bytes("gap-cnn"))
    model = s3_client.post(
        f"{API}/models",
        json={"name": "gap-ref", "uri": f"s3://{bucket}/imports/gap.pt", "dataset_id": record["id"]},
    )
    assert model.status_code == 201, model.text
    assert model.json()["num_classes"] == 10


def test_the_upload_cap_applies_to_uploads_only(s3_client, seaweed, bucket):
    large = helpers.npz_bytes(n=600)  # about 2.4 MiB: over this server's 2 MiB upload limit
    assert len(large) > 2 * MIB
    assert helpers.upload_dataset(s3_client, "large", large).status_code == 413
    seaweed.client().put_object(Bucket=bucket, Key="imports/large.npz", Body=large)
    response = s3_client.post(
        f"{API}/datasets", json={"name": "large", "uri": f"s3://{bucket}/imports/large.npz"}
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"name": "x", "uri": "s3://someone-elses/data.npz"}, 422, "own bucket"),
        ({"name": "x", "uri": "s3://{bucket}/nothing-here.npz"}, 422, "no such object"),
        ({"name": "x", "uri": "s3://{bucket}/notes.txt"}, 415, "extension"),
        ({"name": "x", "uri": "ftp://host/data.npz"}, 422, "s3://"),
        ({"name": "x"}, 422, "uri"),
        ({"name": "x", "uri": 7}, 422, "uri"),
        ({"uri": "s3://{bucket}/nothing-here.npz"}, 422, "name"),
    ],
)
def test_bad_references_are_4xx_with_a_reason(s3_client, seaweed, bucket, body, status, reason):
    body = {
        key: value.format(bucket=bucket) if isinstance(value, str) else value for key, value in body.items()
    }
    before = stored_keys(seaweed, bucket)
    response = s3_client.post(f"{API}/datasets", json=body)
    assert response.status_code == status, response.text
    assert reason in response.json()["detail"] or reason in response.text
    assert stored_keys(seaweed, bucket) == before


def test_a_file_and_a_uri_together_are_refused(s3_client, bucket):
    response = s3_client.post(
        f"{API}/datasets",
        data={"name": "both", "uri": f"s3://{bucket}/x.npz"},
        files={"file": ("data.npz", helpers.npz_bytes(), helpers.OCTETS)},
    )
    assert response.status_code == 422 and "not both" in response.json()["detail"]
    neither = s3_client.post(f"{API}/models", data={"name": "neither", "input_shape": "1,32,32"})
    assert neither.status_code == 422 and "either as a file upload" in neither.json()["detail"]


def test_a_local_store_refuses_references(client):
    response = client.post(f"{API}/datasets", json={"name": "x", "uri": "s3://bucket/data.npz"})
    assert response.status_code == 422 and "local directory" in response.json()["detail"]


def test_the_store_down_is_a_503_not_a_500(s3_client, seaweed, bucket, monkeypatch):
    store = s3_client.app.state.store
    monkeypatch.setattr(store.client.meta, "_endpoint_url", "http://127.0.0.1:9")  # nothing listens there
    from botocore.exceptions import EndpointConnectionError

    def unreachable(**_kwargs):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    store.client.meta.events.register("before-call.s3", unreachable)
    response = helpers.upload_dataset(s3_client, "down", helpers.npz_bytes())
    assert response.status_code == 503 and "artifact store" in response.json()["detail"]
