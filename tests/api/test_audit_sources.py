"""Transfer sources of an audit: stored and read back, and every bad source a 422 that writes nothing."""

from __future__ import annotations

import pytest

from tests.support import api as helpers
from tests.support.api import API

pytestmark = pytest.mark.timeout(120)

CONFIG = {"eps": [0, "8/255"], "cam": "none", "triptychs": 0, "device": "cpu"}


@pytest.fixture
def source(client, npz_dataset) -> dict:
    response = helpers.upload_model(
        client, "surrogate", helpers.demo_bytes("gap-cnn-retrained"), "s.pt", dataset_id=npz_dataset["id"]
    )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def body(gap_model, npz_dataset):
    def make(**fields) -> dict:
        return {
            "name": "nightly",
            "model_name": gap_model["name"],
            "dataset_id": npz_dataset["id"],
            "config": CONFIG,
        }

    return lambda **fields: make() | fields


def test_sources_are_stored_deduplicated_and_can_be_cleared(client, body, source):
    response = client.post(f"{API}/audits", json=body(transfer_source_ids=[source["id"], source["id"]]))
    assert response.status_code == 201, response.text
    audit = response.json()
    assert audit["transfer_source_ids"] == [source["id"]]
    assert audit["thresholds"]["transfer_worst_case_drop_pp"] == 5.0
    assert client.get(f"{API}/audits/{audit['id']}").json()["transfer_source_ids"] == [source["id"]]
    cleared = client.patch(f"{API}/audits/{audit['id']}", json={"transfer_source_ids": []})
    assert cleared.status_code == 200 and cleared.json()["transfer_source_ids"] is None
    plain = client.post(f"{API}/audits", json=body(name="plain")).json()
    assert plain["transfer_source_ids"] is None


def test_sources_can_be_extended_and_reordered(client, body, source, npz_dataset):
    second = helpers.upload_model(
        client, "surrogate-2", helpers.demo_bytes("separable-cnn"), "t.pt", dataset_id=npz_dataset["id"]
    ).json()
    audit = client.post(f"{API}/audits", json=body(transfer_source_ids=[source["id"]])).json()
    for ids in ([source["id"], second["id"]], [second["id"], source["id"]]):  # a kept source keeps its row
        changed = client.patch(f"{API}/audits/{audit['id']}", json={"transfer_source_ids": ids})
        assert changed.status_code == 200, changed.text
        assert changed.json()["transfer_source_ids"] == ids
        assert client.get(f"{API}/audits/{audit['id']}").json()["transfer_source_ids"] == ids


def _refused(client, response, message: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert message in response.json()["detail"]


def test_an_unknown_source_or_the_audited_model_itself_is_refused(client, body, gap_model):
    _refused(
        client, client.post(f"{API}/audits", json=body(transfer_source_ids=[999])), "model 999 does not exist"
    )
    _refused(
        client,
        client.post(f"{API}/audits", json=body(transfer_source_ids=[gap_model["id"]])),
        "are also audited",
    )
    _refused(client, client.post(f"{API}/audits", json=body(transfer_source_ids=[0])), "transfer_source_ids")
    assert client.get(f"{API}/audits").json()["count"] == 0


def test_a_source_of_another_input_shape_is_refused_with_the_transfer_engines_message(
    client, body, npz_dataset
):
    other = helpers.upload_dataset(client, "bigger", helpers.npz_bytes(shape=(1, 40, 40)))
    assert other.status_code == 201, other.text
    wide = helpers.upload_model(
        client, "wide", helpers.demo_bytes("gap-cnn"), "w.pt", dataset_id=other.json()["id"]
    )
    assert wide.status_code == 201, wide.text
    response = client.post(f"{API}/audits", json=body(transfer_source_ids=[wide.json()["id"]]))
    _refused(client, response, "takes inputs of shape (1, 40, 40)")
    assert "transfer_source_ids: " in response.json()["detail"]
    assert client.get(f"{API}/audits").json()["count"] == 0


def test_a_patch_with_a_bad_source_changes_nothing(client, body, source):
    audit = client.post(f"{API}/audits", json=body(transfer_source_ids=[source["id"]])).json()
    _refused(
        client,
        client.patch(f"{API}/audits/{audit['id']}", json={"transfer_source_ids": [12345]}),
        "model 12345 does not exist",
    )
    assert client.get(f"{API}/audits/{audit['id']}").json()["transfer_source_ids"] == [source["id"]]
