"""/transfer: submit (every refusal a 422 with its message and nothing written), read, list, cancel, and a
job run in-process by the worker code with its matrix read back."""

from __future__ import annotations

import pytest

from api.main import create_app
from tests.support import api as helpers
from tests.support.api import API, FakeBroker, RecordingEnqueue
from tests.support.transfers import run_transfer

CONFIG = {"eps": "0,8/255,32/255", "steps": 2, "limit": 16, "batch_size": 8}


@pytest.fixture
def transfer_enqueue() -> RecordingEnqueue:
    return RecordingEnqueue()


@pytest.fixture
def app(settings, enqueue, transfer_enqueue):
    return create_app(
        settings,
        enqueue=enqueue,
        broker=FakeBroker(),
        listen_host="127.0.0.1",
        enqueue_transfer=transfer_enqueue,
    )


@pytest.fixture
def second_model(client, npz_dataset) -> dict:
    response = helpers.upload_model(
        client,
        "separable",
        helpers.demo_bytes("separable-cnn"),
        "separable-cnn.pt",
        dataset_id=npz_dataset["id"],
    )
    assert response.status_code == 201, response.text
    return response.json()


def _submit(client, dataset, sources, targets, **config):
    body = {
        "dataset_id": dataset["id"],
        "source_ids": [m["id"] for m in sources],
        "target_ids": [m["id"] for m in targets],
        "config": CONFIG | config,
    }
    return client.post(f"{API}/transfer", json=body)


def _count(client) -> int:
    return client.get(f"{API}/transfer").json()["count"]


def test_submit_writes_a_queued_job_and_enqueues_its_id(
    client, npz_dataset, gap_model, second_model, transfer_enqueue
):
    response = _submit(client, npz_dataset, [gap_model, second_model], [gap_model])
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued" and job["queue"] == "evaluations"
    assert [m["id"] for m in job["sources"]] == [gap_model["id"], second_model["id"]]
    assert [m["name"] for m in job["targets"]] == ["gap"]
    assert job["config"]["eps"] == [0.0, 8 / 255, 32 / 255] and job["config"]["attacks"] == ["fgsm", "pgd"]
    assert transfer_enqueue.job_ids == [job["id"]]
    read = client.get(f"{API}/transfer/{job['id']}").json()
    assert read["cells"] == [] and read["worst_case"] == []
    listed = client.get(f"{API}/transfer", params={"model_id": second_model["id"]}).json()
    assert [item["id"] for item in listed["data"]] == [job["id"]]


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"dataset_id": 999}, "dataset_id 999: there is no such dataset"),
        ({"source_ids": [999]}, "model_id 999: there is no such model"),
        ({"source_ids": []}, "source_ids"),
        ({"target_ids": [2**63]}, "less than or equal to 2147483647"),  # beyond any database id, not a 500
        ({"config": {"eps": "0,3"}}, "outside [0, 1]"),
        ({"config": {"attacks": "square"}}, "unknown attacks square"),
        ({"config": {"steps": 0}}, "steps"),
        ({"config": {"device": "tpu"}}, "unknown device"),
        ({"config": {"cam": "auto"}}, "unknown option(s) cam"),
    ],
)
def test_bad_input_is_a_422_with_its_message_and_nothing_written(
    client, npz_dataset, gap_model, transfer_enqueue, change, phrase
):
    body = {"dataset_id": npz_dataset["id"], "source_ids": [gap_model["id"]], "target_ids": [gap_model["id"]]}
    response = client.post(f"{API}/transfer", json=body | change)
    assert response.status_code == 422, response.text
    assert phrase in response.text
    assert _count(client) == 0 and transfer_enqueue.job_ids == []


def test_a_model_of_another_input_shape_is_refused(client, npz_dataset, gap_model, transfer_enqueue):
    response = helpers.upload_model(
        client, "small", helpers.demo_bytes("gap-cnn"), "gap-cnn.pt", input_shape="1,16,16"
    )
    assert response.status_code == 201, response.text
    response = _submit(client, npz_dataset, [gap_model], [response.json()])
    assert response.status_code == 422
    assert "takes inputs of shape (1, 16, 16)" in response.json()["detail"]
    assert _count(client) == 0 and transfer_enqueue.job_ids == []


def test_the_same_model_twice_in_a_role_is_refused(client, npz_dataset, gap_model):
    response = _submit(client, npz_dataset, [gap_model, gap_model], [gap_model])
    assert response.status_code == 422 and "given twice" in response.json()["detail"]


def test_unknown_transfer_is_a_404_and_cancel_of_a_queued_one_ends_it(client, npz_dataset, gap_model):
    assert client.get(f"{API}/transfer/12345").status_code == 404
    job = _submit(client, npz_dataset, [gap_model], [gap_model]).json()
    cancelled = client.post(f"{API}/transfer/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.post(f"{API}/transfer/{job['id']}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]


def test_a_model_in_a_transfer_job_cannot_be_deleted_until_the_job_is(client, npz_dataset, gap_model):
    job = _submit(client, npz_dataset, [gap_model], [gap_model]).json()
    response = client.delete(f"{API}/models/{gap_model['id']}")
    assert response.status_code == 409 and "transfer job" in response.json()["detail"]
    response = client.delete(f"{API}/transfer/{job['id']}")
    assert response.status_code == 409 and "cancel it before deleting it" in response.json()["detail"]
    client.post(f"{API}/transfer/{job['id']}/cancel")
    assert client.delete(f"{API}/transfer/{job['id']}").status_code == 204
    assert client.get(f"{API}/transfer/{job['id']}").status_code == 404
    assert client.delete(f"{API}/models/{gap_model['id']}").status_code == 204


def test_a_job_run_by_the_worker_gives_the_matrix(client, app, npz_dataset, gap_model, second_model):
    job = _submit(client, npz_dataset, [gap_model, second_model], [gap_model, second_model]).json()
    assert run_transfer(app, job["id"]) == "succeeded"
    read = client.get(f"{API}/transfer/{job['id']}").json()
    assert read["status"] == "succeeded" and read["progress"] == 1.0
    assert len(read["cells"]) == 2 * 2 * 2 * 3  # sources × targets × attacks × ε
    white = {(c["source_model_id"], c["attack"], c["eps"]) for c in read["cells"] if c["white_box"]}
    assert len(white) == 2 * 2 * 3
    assert all(c["n"] == 16 for c in read["cells"])
    clean = {
        c["target_model_id"]: c["accuracy"] for c in read["cells"] if c["eps"] == 0 and c["attack"] == "fgsm"
    }
    for cell in read["cells"]:
        assert 0 <= cell["accuracy"] <= 1
        if cell["eps"] == 0:  # ε = 0: the target's clean accuracy, whoever crafted
            assert cell["accuracy"] == clean[cell["target_model_id"]]
    assert {(w["target_model_id"], w["attack"]) for w in read["worst_case"]} == {
        (m["id"], a) for m in (gap_model, second_model) for a in ("fgsm", "pgd", "all")
    }
    assert run_transfer(app, job["id"]) is None  # redelivered: nothing to do, nothing duplicated
    assert len(client.get(f"{API}/transfer/{job['id']}").json()["cells"]) == 24
