"""Ids and numbers written with non-ASCII digits ("²") are bad input (4xx), never a server error."""

from __future__ import annotations

from tests.support import api as helpers
from tests.support.api import API


def test_superscript_digits_in_ids_and_shapes_are_client_errors(client):
    assert client.get(f"{API}/compare", params={"job_ids": "1,²"}).status_code == 422
    response = helpers.upload_model(client, "gap", helpers.demo_bytes("gap-cnn"), input_shape="1,³²,32")
    assert response.status_code == 422 and "C,H,W" in response.json()["detail"]
    for path in ("/jobs/²", "/models/¹"):  # the dashboard's pages
        assert client.get(path).status_code == 404, path
    assert client.get("/compare", params={"dataset_id": "²"}).status_code == 422
