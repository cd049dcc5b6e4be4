"""The new-evaluation form (submit, bad values, cross-site posts) and token sign-in with the cookie."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from api.deps import TOKEN_COOKIE
from api.main import create_app
from db import repositories as repo
from db.session import session_scope
from tests.support.api import API, FakeBroker

FORM = {
    "eps": "0,2/255,8/255",
    "targeted": "class",
    "target_class": "3",
    "cam": "auto",
    "cam_eps": "8/255",
    "cam_samples": "4",
    "limit": "8",
    "device": "cpu",
    "precision": "fp32",
    "batch_size": "8",
    "seed": "1",
}


def test_form_lists_models_datasets_and_cam_layers(client, finished, weights_model, npz_dataset):
    page = client.get(f"/evaluations/new?model_id={weights_model['id']}")
    assert page.status_code == 200
    assert f'<option value="{weights_model["id"]}" selected>' in page.text
    assert f'<option value="{npz_dataset["id"]}"' in page.text
    assert 'id="cam" name="cam" data-selected="auto"' in page.text  # form.js lists the model's conv layers


def test_form_creates_a_job_and_goes_to_its_page(client, weights_model, npz_dataset, enqueue):
    response = client.post(
        "/evaluations/new",
        data={
            **FORM,
            "model_id": weights_model["id"],
            "dataset_id": npz_dataset["id"],
            "save_adversarial": "1",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    job_id = int(response.headers["location"].removeprefix("/jobs/"))
    assert enqueue.job_ids == [job_id]
    config = client.get(f"{API}/jobs/{job_id}").json()["config"]
    assert config["eps"] == [0, 2 / 255, 8 / 255] and config["targeted"] == "class:3"
    assert config["limit"] == 8 and config["seed"] == 1 and config["save_adversarial"] is True
    assert config["channels_last"] is False and config["device"] == "cpu"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"eps": "0,abc"}, "abc"),
        ({"eps": "0,2"}, "[0, 1]"),
        ({"limit": "many"}, "Sample limit: Input should be a valid integer"),
        ({"limit": "0"}, "Sample limit: Input should be greater than or equal to 1"),
        ({"model_id": "424242"}, "model_id 424242: there is no such model"),
        ({"model_id": ""}, "Model: choose or enter a value"),
        ({"target_class": "99"}, "outside the model&#39;s 10 classes"),
        ({"cam": "features.99"}, "features.99"),
        ({"device": "tpu"}, "unknown device"),
        ({"precision": "fp8"}, "fp8"),
    ],
)
def test_bad_form_values_come_back_as_messages(client, weights_model, npz_dataset, enqueue, changes, message):
    values = {**FORM, "model_id": weights_model["id"], "dataset_id": npz_dataset["id"], **changes}
    page = client.post("/evaluations/new", data=values, follow_redirects=False)
    assert page.status_code == 422, page.text
    errors = page.text[page.text.index('id="form-errors"') :]
    assert message in errors[: errors.index("</div>")], errors[:1500]
    assert f'value="{values["eps"]}"' in page.text  # what was typed stays in the form
    assert enqueue.job_ids == []


def test_cross_site_form_posts_are_refused(client, weights_model, npz_dataset, enqueue):
    values = {**FORM, "model_id": weights_model["id"], "dataset_id": npz_dataset["id"]}
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        page = client.post("/evaluations/new", data=values, headers=headers, follow_redirects=False)
        assert page.status_code == 403 and "from another site" in page.text
    assert enqueue.job_ids == []
    same = client.post(
        "/evaluations/new", data=values, headers={"Origin": "http://testserver"}, follow_redirects=False
    )
    assert same.status_code == 303


@pytest.fixture
def secured(settings, enqueue):
    app = create_app(
        settings.model_copy(update={"auth": "required"}),
        enqueue=enqueue,
        broker=FakeBroker(),
        listen_host="127.0.0.1",
    )
    with TestClient(app) as client:
        with session_scope(app.state.sessions) as session:
            token = repo.tokens.create_token(session=session, name="browser")
        yield client, token


def test_with_auth_pages_ask_for_the_token_once(secured):
    client, token = secured
    for path in ("/", "/jobs/1", "/models/1", "/compare?job_ids=1", "/evaluations/new"):
        page = client.get(path, follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == f"/login?next={quote(path, safe='')}"
    assert client.get(f"{API}/models").status_code == 401
    assert client.get("/jobs/1/report-section").status_code == 401
    login = client.get("/login?next=/evaluations/new")
    assert login.status_code == 200 and 'name="token"' in login.text
    wrong = client.post("/login", data={"token": "nope", "next": "/"}, follow_redirects=False)
    assert wrong.status_code == 401 and "invalid or was revoked" in wrong.text
    assert TOKEN_COOKIE not in client.cookies
    signed = client.post("/login", data={"token": token, "next": "/evaluations/new"}, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/evaluations/new"
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith(f"{TOKEN_COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Path=/" in cookie
    assert client.get("/", follow_redirects=False).status_code == 200
    assert client.get(f"{API}/models").status_code == 200  # the browser's fetches authenticate by the cookie
    assert 'action="/logout"' in client.get("/").text
    out = client.post("/logout", follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert client.get("/", follow_redirects=False).status_code == 303


def test_login_never_redirects_off_site(secured):
    client, token = secured
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        response = client.post("/login", data={"token": token, "next": target}, follow_redirects=False)
        assert response.headers["location"] == "/", target


def test_without_auth_there_is_no_login(client):
    assert client.get("/login?next=/compare", follow_redirects=False).headers["location"] == "/compare"
    assert 'action="/logout"' not in client.get("/").text
