"""Transfer pages without a browser: the form's fields are the declared options, bad input comes back on the
form with nothing written, the heat map colours and marks the cells of a finished job."""

from __future__ import annotations

import pytest

from api.main import create_app
from services.transfer_specs import TRANSFER_OPTIONS
from tests.support.api import FakeBroker, RecordingEnqueue
from tests.support.transfers import run_transfer


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


def _form(dataset, model, **extra):
    return {
        "dataset_id": str(dataset["id"]),
        "source_ids": [str(model["id"])],
        "target_ids": [str(model["id"])],
        "eps": "0,16/255",
        "steps": "2",
        "limit": "8",
        **extra,
    }


def test_the_form_offers_every_declared_option(client, gap_model):
    page = client.get("/transfers/new")
    assert page.status_code == 200
    for option in TRANSFER_OPTIONS:
        assert f'name="{option.name}"' in page.text
    assert 'value="0,1/255,2/255,4/255,8/255,16/255,32/255"' in page.text  # the declared default ε list
    assert 'href="/transfers"' in client.get("/").text  # the nav link


def test_bad_input_comes_back_on_the_form_and_nothing_is_written(
    client, npz_dataset, gap_model, transfer_enqueue
):
    response = client.post("/transfers/new", data=_form(npz_dataset, gap_model, eps="0,3"))
    assert response.status_code == 422 and "outside [0, 1]" in response.text
    response = client.post("/transfers/new", data=_form(npz_dataset, gap_model, target_ids=[]))
    assert response.status_code == 422 and "Targets" in response.text
    assert transfer_enqueue.job_ids == [] and "No transfer matrices yet" in client.get("/transfers").text


def test_a_finished_job_shows_its_heat_map(client, app, npz_dataset, gap_model, transfer_enqueue):
    response = client.post("/transfers/new", data=_form(npz_dataset, gap_model), follow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    transfer_id = int(location.rsplit("/", 1)[-1])
    assert transfer_enqueue.job_ids == [transfer_id]
    assert 'http-equiv="refresh"' in client.get(location).text  # queued: it reloads itself
    assert run_transfer(app, transfer_id) == "succeeded"
    page = client.get(location, params={"attack": "pgd", "eps": f"{16 / 255:.6g}"})
    assert page.status_code == 200 and 'http-equiv="refresh"' not in page.text
    assert page.text.count('class="heat white-box"') == 1
    assert "background: hsl(" in page.text and f'href="/models/{gap_model["id"]}"' in page.text
    assert 'class="active" aria-current="page">pgd</a>' in page.text
    assert client.get("/transfers/999").status_code == 404
    assert f'href="/transfers/{transfer_id}"' in client.get("/transfers").text
