"""Editing an audit through the pre-filled form (PATCH's use case) and deleting it after a confirmation step."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.dashboard.audit_form import audit_values
from api.main import create_app
from db import repositories as repo
from db.session import session_scope
from tests.support.api import API, FakeBroker
from tests.support.dashboard import (
    FORM,
    HTML,
    MODEL_NAME,
    RecordingDispatch,
    audits,
    digits,
    judge,
    register_version,
)


@pytest.fixture
def model(client) -> dict:
    return register_version(client, "gap-cnn")


@pytest.fixture
def audit(client, model) -> dict:
    """An audit made through the new-audit form (cron in Paris, class:3 targets, custom thresholds, webhook)."""
    response = client.post("/audits/new", data={**FORM, "dataset_id": str(digits(client)["id"])})
    assert response.status_code == 200, response.text[-1500:]
    [made] = audits(client)
    return made


def edit_form(app, audit_id: int, **changes) -> dict:
    """The form as the edit page fills it for the audit, with `changes` typed over it."""
    with session_scope(app.state.sessions) as session:
        values, model_ids, flags = audit_values(repo.audits.get(session=session, audit_id=audit_id))
    return {**values, "model_ids": model_ids, **{flag: "1" for flag in flags}, **changes}


def read(client, audit_id: int) -> dict:
    return client.get(f"{API}/audits/{audit_id}").json()


def test_the_edit_form_is_filled_with_the_audit(client, audit, model):
    page = client.get(f"/audits/{audit['id']}")
    assert (
        f'href="/audits/{audit["id"]}/edit"' in page.text
        and f'href="/audits/{audit["id"]}/delete"' in page.text
    )
    page = client.get(f"/audits/{audit['id']}/edit")
    assert page.status_code == 200
    assert f'action="/audits/{audit["id"]}/edit"' in page.text and "Save changes" in page.text
    for field, value in (
        ("name", "nightly digits"),
        ("cron", "0 3 * * 1"),
        ("timezone", "Europe/Paris"),
        ("eps", "0,2/255,8/255"),
        ("webhook_url", "https://hooks.example.com/advaudit"),
    ):
        assert f'id="{field}" name="{field}"' in page.text and f'value="{value}"' in page.text, field
    assert 'name="target_class" type="number" min="0" step="1" value="3"' in page.text
    assert (
        '<option value="class" selected>' in page.text
        and 'name="limit" type="number" min="1" step="1" value="64"' in page.text
    )
    for field, value in (
        ("clean_accuracy_drop_pp", "1.5"),
        ("accuracy_drop_pp", "5"),
        ("robust_auc_drop_pp", ""),
        ("cam_drift_rise", "0.1"),
    ):
        assert f'name="{field}" type="number" min="0" step="any" value="{value}"' in page.text, field
    assert (
        'name="enabled" value="1" checked' in page.text
        and 'name="run_on_new_version" value="1" checked' in page.text
    )
    assert f'<option value="{MODEL_NAME}" data-model-id="{model["id"]}" selected>' in page.text
    assert 'name="schedule" value="cron" checked' in page.text and 'data-selected="none"' in page.text


def test_an_unchanged_form_leaves_an_api_made_audit_as_it_was(client, app, model, finished):
    """Fixed models, an interval, a pinned baseline and options the form lacks (triptychs) all survive."""
    made = client.post(
        f"{API}/audits",
        json={
            "name": "fixed",
            "model_ids": [model["id"]],
            "dataset_id": finished["dataset_id"],
            "interval_s": 5400,
            "baseline_job_id": finished["id"],
            "enabled": False,
            "config": {
                "eps": [0, 0.01, "4/255"],
                "targeted": "random",
                "targeted_eps": ["1/255"],
                "triptychs": 0,
                "cam": "none",
                "device": "cuda:1",
                "limit": 32,
            },
            "thresholds": {"cam_drift_rise": None, "accuracy_drop_pp": 1.25},
        },
    ).json()
    page = client.get(f"/audits/{made['id']}/edit")
    assert 'value="90m"' in page.text and 'name="selector" value="ids" checked' in page.text
    assert f'name="model_ids" value="{model["id"]}" checked' in page.text
    assert f'<option value="{finished["id"]}" selected>' in page.text
    assert '<option value="cuda:1" selected>' in page.text and 'value="0,0.01,4/255"' in page.text
    response = client.post(
        f"/audits/{made['id']}/edit", data=edit_form(app, made["id"]), follow_redirects=False
    )
    assert response.status_code == 303, response.text[-1500:]
    after = read(client, made["id"])
    assert {key: after[key] for key in after if key != "updated_at"} == {
        key: made[key] for key in made if key != "updated_at"
    }


def test_an_edit_changes_the_schedule_and_thresholds(client, app, audit):
    data = edit_form(
        app,
        audit["id"],
        schedule="interval",
        interval="6h",
        accuracy_drop_pp="2.5",
        cam_drift_rise="",
        robust_auc_drop_pp="4",
        eps="0,4/255",
    )
    response = client.post(f"/audits/{audit['id']}/edit", data=data, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/audits/{audit['id']}?saved=1"
    after = read(client, audit["id"])
    assert (after["cron"], after["timezone"], after["interval_s"]) == (None, None, 6 * 3600)
    assert after["thresholds"] == {
        "clean_accuracy_drop_pp": 1.5,
        "accuracy_drop_pp": 2.5,
        "worst_case_drop_pp": 3.0,
        "robust_auc_drop_pp": 4.0,
        "target_success_rise_pp": 5.0,
        "cam_drift_rise": None,
        "transfer_worst_case_drop_pp": None,  # not in the posted form: left empty, not checked
    }
    assert after["config"]["eps"] == [0, 4 / 255] and after["config"]["targeted"] == "class:3"
    assert after["name"] == audit["name"] and after["webhook_url"] == audit["webhook_url"]
    page = client.get(response.headers["location"])
    assert (
        "The audit was saved" in page.text
        and "every 6 h" in page.text
        and "accuracy drop at each ε: <strong>2.5" in page.text
    )


@pytest.mark.parametrize(
    ("changes", "message", "status"),
    [
        ({"name": ""}, "Name: choose or enter a value", 422),
        ({"cron": "61 * * * *"}, "outside 0…59", 422),
        ({"schedule": "interval", "interval": "soon"}, "Interval: &#39;soon&#39; is not a duration", 422),
        ({"accuracy_drop_pp": "-1"}, "FGSM accuracy drop: Input should be greater than or equal to 0", 422),
        ({"webhook_url": "ftp://example.com/x"}, "must be an http:// or https:// URL", 422),
        ({"selector": "ids", "model_ids": []}, "Models: tick at least one model", 422),
        ({"name": "taken"}, "exists already", 409),
    ],
)
def test_bad_edits_come_back_as_messages_and_change_nothing(client, app, audit, changes, message, status):
    client.post(
        f"{API}/audits",
        json={
            "name": "taken",
            "model_name": MODEL_NAME,
            "dataset_id": audit["dataset_id"],
            "config": {"cam": "none"},
        },
    )
    data = edit_form(app, audit["id"], eps="0,1/255", **changes)
    page = client.post(f"/audits/{audit['id']}/edit", data=data, follow_redirects=False)
    assert page.status_code == status, page.text[-1500:]
    errors = page.text[page.text.index('id="form-errors"') :]
    assert "The audit was not saved" in errors and message in errors[: errors.index("</div>")], errors[:1500]
    assert (
        'value="0,1/255"' in page.text and f'action="/audits/{audit["id"]}/edit"' in page.text
    )  # inputs kept
    assert read(client, audit["id"]) == audit


def test_delete_asks_first_then_removes_the_audit_and_its_runs_but_keeps_the_jobs(client, app, audit):
    app.state.audit_dispatch = RecordingDispatch()
    run = client.post(f"{API}/audits/{audit['id']}/run").json()
    judge(app, run["id"])
    [job] = client.get(f"{API}/audits/{audit['id']}/runs/{run['id']}").json()["jobs"]
    confirm = client.get(f"/audits/{audit['id']}/delete")
    assert (
        confirm.status_code == 200
        and "<strong>1 run</strong>" in confirm.text
        and "<strong>stay</strong>" in confirm.text
    )
    assert (
        f'action="/audits/{audit["id"]}/delete"' in confirm.text
        and read(client, audit["id"])["id"] == audit["id"]
    )
    response = client.post(f"/audits/{audit['id']}/delete", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/audits?deleted=1"
    listing = client.get(response.headers["location"])
    assert "The audit was deleted with its runs" in listing.text and audits(client) == []
    assert client.get(f"{API}/audits/{audit['id']}").status_code == 404
    with session_scope(app.state.sessions) as session:
        assert repo.audits.get_run(session=session, run_id=run["id"]) is None
    assert client.get(f"{API}/jobs/{job['job_id']}").json()["status"] == "succeeded"
    assert client.get(f"{API}/jobs/{job['job_id']}/report").status_code == 200


def test_cross_site_edits_and_deletes_are_refused(client, app, audit):
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        edit = client.post(
            f"/audits/{audit['id']}/edit",
            data=edit_form(app, audit["id"], name="evil"),
            headers=headers,
            follow_redirects=False,
        )
        delete = client.post(f"/audits/{audit['id']}/delete", headers=headers, follow_redirects=False)
        assert edit.status_code == delete.status_code == 403 and "from another site" in delete.text
    assert read(client, audit["id"]) == audit


def test_unknown_audits_get_404_pages(client, app, audit):
    for path in (
        f"/audits/{audit['id'] + 100}/edit",
        f"/audits/{audit['id'] + 100}/delete",
        "/audits/abc/edit",
    ):
        for method in ("GET", "POST"):
            page = client.request(method, path, headers=HTML, data=edit_form(app, audit["id"]))
            assert page.status_code == 404 and "does not exist" in page.text, (method, path)
    assert len(audits(client)) == 1


def test_with_auth_edit_and_delete_ask_for_the_token(settings, enqueue):
    app = create_app(
        settings.model_copy(update={"auth": "required"}),
        enqueue=enqueue,
        broker=FakeBroker(),
        listen_host="127.0.0.1",
    )
    with TestClient(app) as client:
        for path in ("/audits/1/edit", "/audits/1/delete"):
            for method in ("GET", "POST"):
                page = client.request(method, path, follow_redirects=False)
                assert page.status_code == 303 and page.headers["location"].startswith("/login?next="), path
