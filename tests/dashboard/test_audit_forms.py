"""The new-audit form (create, bad values as messages), the run-now / enable / disable buttons, cross-site posts."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.support.api import API, FakeBroker
from tests.support.dashboard import FORM, MODEL_NAME, RecordingDispatch, audits, digits, register_version


@pytest.fixture
def model(client) -> dict:
    return register_version(client, "gap-cnn")


@pytest.fixture
def form(client, model) -> dict:
    return {**FORM, "dataset_id": str(digits(client)["id"])}


@pytest.fixture
def dispatch(app) -> RecordingDispatch:
    app.state.audit_dispatch = RecordingDispatch()
    return app.state.audit_dispatch


def test_form_offers_models_datasets_zones_and_default_thresholds(client, model, finished):
    page = client.get(f"/audits/new?model_name={MODEL_NAME}")
    assert page.status_code == 200
    assert f'<option value="{MODEL_NAME}" data-model-id="{model["id"]}" selected>' in page.text
    assert f'name="model_ids" value="{model["id"]}"' in page.text
    assert f'value="{digits(client)["id"]}"' in page.text and '<option value="Europe/Paris">' in page.text
    assert f"pin job #{finished['id']}" in page.text  # a succeeded job can be pinned as the baseline
    for field, default in (
        ("clean_accuracy_drop_pp", "2"),
        ("accuracy_drop_pp", "5"),
        ("worst_case_drop_pp", "5"),
        ("robust_auc_drop_pp", "3"),
        ("target_success_rise_pp", "5"),
        ("cam_drift_rise", "0.1"),
    ):
        assert f'name="{field}" type="number" min="0" step="any" value="{default}"' in page.text
    assert 'name="enabled" value="1" checked' in page.text and 'value="0 3 * * *"' in page.text


def test_form_creates_the_audit_and_goes_to_its_page(client, form):
    response = client.post("/audits/new", data=form, follow_redirects=False)
    assert response.status_code == 303, response.text
    [audit] = audits(client)
    assert response.headers["location"] == f"/audits/{audit['id']}"
    assert (audit["name"], audit["model_name"], audit["model_ids"]) == ("nightly digits", MODEL_NAME, None)
    assert (audit["cron"], audit["timezone"], audit["interval_s"]) == ("0 3 * * 1", "Europe/Paris", None)
    assert audit["config"]["eps"] == [0, 2 / 255, 8 / 255] and audit["config"]["targeted"] == "class:3"
    assert (
        audit["config"]["limit"] == 64 and audit["config"]["cam"] == "none" and audit["config"]["seed"] == 1
    )
    assert audit["thresholds"] == {
        "clean_accuracy_drop_pp": 1.5,
        "accuracy_drop_pp": 5.0,
        "worst_case_drop_pp": 3.0,
        "robust_auc_drop_pp": None,
        "target_success_rise_pp": 5.0,
        "cam_drift_rise": 0.1,
        "transfer_worst_case_drop_pp": None,  # the form left it empty: not checked
    }
    assert audit["webhook_url"] == form["webhook_url"] and audit["enabled"] and audit["run_on_new_version"]
    assert audit["baseline"] == "previous" and audit["next_run_at"] is not None
    assert "nightly digits" in client.get(response.headers["location"]).text


def test_form_creates_an_interval_audit_of_fixed_models_with_a_pinned_baseline(client, form, model, finished):
    values = {
        **form,
        "name": "fixed",
        "selector": "ids",
        "model_ids": [str(model["id"])],
        "schedule": "interval",
        "interval": "6h",
        "baseline_job_id": str(finished["id"]),
        "dataset_id": str(finished["dataset_id"]),
        "enabled": "",
        "run_on_new_version": "",
        "webhook_url": "",
        "targeted": "",
        "cam": "auto",
    }
    response = client.post("/audits/new", data=values, follow_redirects=False)
    assert response.status_code == 303, response.text
    [audit] = audits(client)
    assert (audit["model_ids"], audit["model_name"], audit["interval_s"], audit["cron"]) == (
        [model["id"]],
        None,
        6 * 3600,
        None,
    )
    assert audit["baseline_job_id"] == finished["id"] and audit["enabled"] is False
    assert audit["webhook_url"] is None and audit["config"]["targeted"] is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": ""}, "Name: choose or enter a value"),
        ({"name": "a/b"}, "Name: contains a character that is not allowed"),
        ({"cron": "61 * * * *"}, "outside 0…59"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"schedule": "interval", "interval": "soon"}, "Interval: &#39;soon&#39; is not a duration"),
        ({"schedule": "interval", "interval": "10s"}, "≥ 60"),
        ({"selector": "ids"}, "Models: tick at least one model"),
        ({"model_name": "nope"}, "no model named &#39;nope&#39;"),
        ({"eps": "0,2"}, "[0, 1]"),
        ({"limit": "0"}, "Sample limit: Input should be greater than or equal to 1"),
        ({"accuracy_drop_pp": "-1"}, "FGSM accuracy drop: Input should be greater than or equal to 0"),
        ({"cam_drift_rise": "lots"}, "CAM drift rise: Input should be a valid number"),
        ({"webhook_url": "ftp://example.com/x"}, "must be an http:// or https:// URL"),
        ({"baseline_job_id": "4242"}, "job 4242 does not exist"),
        ({"run_on_new_version": "1", "selector": "ids", "model_ids": ["1"]}, "needs a model_name"),
        ({"cam": "features.99"}, "TorchScript archives do not support"),
    ],
)
def test_bad_form_values_come_back_as_messages(client, form, dispatch, changes, message):
    values = {**form, **changes}
    page = client.post("/audits/new", data=values, follow_redirects=False)
    assert page.status_code == 422, page.text[-2000:]
    errors = page.text[page.text.index('id="form-errors"') :]
    assert message in errors[: errors.index("</div>")], errors[:1500]
    assert f'value="{values["cron"]}"' in page.text and f'value="{values["eps"]}"' in page.text  # inputs kept
    assert (
        f'name="accuracy_drop_pp" type="number" min="0" step="any" value="{values["accuracy_drop_pp"]}"'
        in page.text
    )
    assert audits(client) == []


def test_a_duplicate_name_is_explained(client, form):
    assert client.post("/audits/new", data=form, follow_redirects=False).status_code == 303
    page = client.post("/audits/new", data=form, follow_redirects=False)
    assert page.status_code == 409 and "exists already" in page.text and len(audits(client)) == 1


def test_run_now_disable_and_enable_buttons(client, form, dispatch):
    client.post("/audits/new", data=form)
    [audit] = audits(client)
    ran = client.post(f"/audits/{audit['id']}/run", follow_redirects=False)
    assert ran.status_code == 303 and ran.headers["location"].startswith(f"/audits/{audit['id']}?queued=")
    [run] = client.get(f"{API}/audits/{audit['id']}/runs").json()["data"]
    assert dispatch.run_ids == [run["id"]] and run["trigger"] == "manual"
    page = client.get(ran.headers["location"])
    assert f"Run #{run['id']} was queued" in page.text
    assert f'<tr data-run-id="{run["id"]}" data-status="pending"' in page.text
    off = client.post(f"/audits/{audit['id']}/disable", follow_redirects=False)
    assert off.status_code == 303 and off.headers["location"] == f"/audits/{audit['id']}"
    assert client.get(f"{API}/audits/{audit['id']}").json()["enabled"] is False
    page = client.get(f"/audits/{audit['id']}")
    assert 'id="enable-audit"' in page.text and 'class="badge disabled"' in page.text
    assert client.post(f"/audits/{audit['id']}/enable", follow_redirects=False).status_code == 303
    assert client.get(f"{API}/audits/{audit['id']}").json()["enabled"] is True


def test_run_now_with_the_broker_down_is_explained_and_records_nothing(client, app, form):
    app.state.audit_dispatch = RecordingDispatch(ConnectionError("broker down"))
    client.post("/audits/new", data=form)
    [audit] = audits(client)
    page = client.post(f"/audits/{audit['id']}/run", follow_redirects=False)
    assert page.status_code == 503 and "nothing was recorded" in page.text and 'id="audit-error"' in page.text
    assert client.get(f"{API}/audits/{audit['id']}/runs").json()["count"] == 0


def test_cross_site_posts_are_refused(client, form, dispatch):
    evil = {"Origin": "http://evil.example"}
    page = client.post("/audits/new", data=form, headers=evil, follow_redirects=False)
    assert page.status_code == 403 and "from another site" in page.text and audits(client) == []
    client.post("/audits/new", data=form, headers={"Origin": "http://testserver"})
    [audit] = audits(client)
    for action in ("run", "disable"):
        for headers in (evil, {"Sec-Fetch-Site": "cross-site"}):
            refused = client.post(f"/audits/{audit['id']}/{action}", headers=headers, follow_redirects=False)
            assert refused.status_code == 403, action
    assert dispatch.run_ids == [] and client.get(f"{API}/audits/{audit['id']}").json()["enabled"] is True


def test_with_auth_the_audit_pages_ask_for_the_token(settings, enqueue):
    app = create_app(
        settings.model_copy(update={"auth": "required"}),
        enqueue=enqueue,
        broker=FakeBroker(),
        listen_host="127.0.0.1",
    )
    app.state.audit_dispatch = RecordingDispatch()
    with TestClient(app) as client:
        for path in ("/audits", "/audits/new", "/audits/1", "/audits/1/runs/1"):
            page = client.get(path, follow_redirects=False)
            assert (
                page.status_code == 303 and page.headers["location"] == f"/login?next={quote(path, safe='')}"
            )
        assert client.post("/audits/1/run", follow_redirects=False).status_code == 303
        assert app.state.audit_dispatch.run_ids == []
