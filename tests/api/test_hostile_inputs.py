"""Inputs a red-team run got through: huge labels, an uncapped ε string, loose types, blank names."""

from __future__ import annotations

import io

import numpy as np
import pytest

from services.limits import MAX_CLASSES, MAX_EPS_VALUES
from tests.support import api as helpers
from tests.support.api import API, assert_refused, upload_snapshot
from tests.support.builders import write_functional_conv_model


def _labels_npz(top: int) -> bytes:
    buffer = io.BytesIO()
    y = np.zeros(8, dtype=np.int64)
    y[3] = top
    np.savez(buffer, x=np.random.default_rng(0).random((8, 1, 32, 32), dtype=np.float32), y=y)
    return buffer.getvalue()


@pytest.mark.parametrize("top", [2**63 - 1, 2**40, MAX_CLASSES])
def test_labels_beyond_the_class_limit_are_422(client, app, top):
    before = upload_snapshot(client, app)
    response = helpers.upload_dataset(client, "huge", _labels_npz(top), "huge.npz")
    assert_refused(client, app, response, 422, f"y[3] is {top}", f"at most {MAX_CLASSES}", before=before)


def test_the_largest_allowed_label_is_accepted(client):
    response = helpers.upload_dataset(client, "wide", _labels_npz(MAX_CLASSES - 1), "wide.npz")
    assert response.status_code == 201, response.text
    assert response.json()["num_classes"] == MAX_CLASSES


def _submit(client, model, dataset, **config):
    return client.post(
        f"{API}/jobs", json={"model_id": model["id"], "dataset_id": dataset["id"], "config": config}
    )


@pytest.mark.parametrize("key", ["eps", "targeted_eps"])
@pytest.mark.parametrize("form", ["list", "string"])
def test_every_form_of_an_eps_list_meets_one_limit(client, gap_model, npz_dataset, enqueue, key, form):
    values = [i / 100_000 for i in range(MAX_EPS_VALUES + 1)]
    listed = values if form == "list" else ",".join(map(str, values))
    config = {key: listed, **({"targeted": "next"} if key == "targeted_eps" else {})}
    response = _submit(client, gap_model, npz_dataset, **config)
    assert response.status_code == 422, response.text
    assert f"{key} has {MAX_EPS_VALUES + 1} values; at most {MAX_EPS_VALUES}" in response.json()["detail"]
    ok = {key: listed[:-1] if form == "list" else listed.rsplit(",", 1)[0]}
    assert _submit(client, gap_model, npz_dataset, **{**config, **ok}).status_code == 201
    assert len(enqueue.job_ids) == 1


def test_ten_thousand_eps_in_a_string_are_refused(client, gap_model, npz_dataset, enqueue):
    response = _submit(client, gap_model, npz_dataset, eps=",".join(["1/255"] * 10_000))
    assert response.status_code == 422 and "10000 values" in response.json()["detail"]
    assert enqueue.job_ids == []


LOOSE = [
    ({"eps": [True]}, "eps"),
    ({"eps": [0, False]}, "eps"),
    ({"cam_eps": True}, "cam_eps"),
    ({"channels_last": "yes"}, "channels_last"),
    ({"save_adversarial": 1}, "save_adversarial"),
    ({"batch_size": True}, "batch_size"),
    ({"batch_size": "64"}, "batch_size"),
    ({"limit": 10.0}, "limit"),
    ({"seed": "1"}, "seed"),
]


@pytest.mark.parametrize(("config", "field"), LOOSE)
def test_values_of_the_wrong_json_type_are_422(client, gap_model, npz_dataset, enqueue, config, field):
    response = _submit(client, gap_model, npz_dataset, **config)
    assert response.status_code == 422, (config, response.text)
    assert field in response.json()["detail"], response.json()["detail"]
    assert enqueue.job_ids == []


def test_numbers_of_either_json_kind_are_still_eps(client, gap_model, npz_dataset):
    response = _submit(client, gap_model, npz_dataset, eps=[0, 1, 0.5, "8/255"], cam_eps=0)
    assert response.status_code == 201, response.text
    assert response.json()["config"]["eps"] == [0.0, 1.0, 0.5, 8 / 255]


@pytest.mark.parametrize("name", [" ", "   ", "\u3000", " \u00a0 "])
def test_blank_names_are_refused_everywhere(client, app, gap_model, name):
    before = upload_snapshot(client, app)
    response = helpers.upload_dataset(client, name, helpers.npz_bytes())
    assert_refused(client, app, response, 422, "visible character", before=before)
    response = helpers.upload_model(
        client, name, helpers.demo_bytes("gap-cnn"), "m.pt", input_shape="1,32,32"
    )
    assert_refused(client, app, response, 422, "visible character", before=before)
    audit = {"name": name, "model_ids": [gap_model["id"]], "dataset_id": 1, "schedule": {"every_s": 3600}}
    response = client.post(f"{API}/audits", json=audit)
    assert response.status_code == 422 and "visible character" in response.json()["detail"], response.text


def test_names_lose_their_surrounding_spaces(client):
    response = helpers.upload_dataset(client, "  spaced  ", helpers.npz_bytes())
    assert response.status_code == 201 and response.json()["name"] == "spaced"


def test_a_model_with_a_functional_convolution_registers_and_its_jobs_succeed(
    client, app, npz_dataset, tmp_path
):
    """Its convolution is F.conv2d on a plain tensor: the audit reports what it can, the job keeps its sweep."""
    path = write_functional_conv_model(tmp_path / "functional.pt")
    response = helpers.upload_model(
        client, "functional", path.read_bytes(), "functional.pt", dataset_id=npz_dataset["id"]
    )
    assert response.status_code == 201, response.text
    model = response.json()
    audit = client.get(f"{API}/models/{model['id']}/architecture").json()
    assert audit["layers"][0]["kernel_size"] == [3, 3]
    assert client.get(f"{API}/models/{model['id']}/filters.png").status_code == 404
    job = _submit(client, model, npz_dataset, eps=[0, "8/255"], batch_size=8).json()
    assert helpers.run_job(app, job["id"]) == "succeeded"
    report = client.get(f"{API}/jobs/{job['id']}/report").json()
    assert len(report["fgsm"]) == 2
    assert any(line.startswith("filter grid skipped") for line in report["warnings"])
