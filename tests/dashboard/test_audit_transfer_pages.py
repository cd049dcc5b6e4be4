"""Transfer sources on the dashboard: the audit form's multi-select, and the transfer row and link of a run."""

from __future__ import annotations

import pytest

from tests.support.api import API
from tests.support.dashboard import (
    AUDIT_CONFIG,
    FORM,
    MODEL_NAME,
    RecordingDispatch,
    audits,
    digits,
    judge,
    register_version,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def source(client) -> dict:
    return register_version(client, "gap-cnn-retrained", name="surrogate")


def test_the_form_offers_the_models_as_sources_and_saves_and_shows_the_choice(client, source):
    candidate = register_version(client, "gap-cnn")
    page = client.get("/audits/new")
    assert '<select id="transfer_source_ids" name="transfer_source_ids" multiple' in page.text
    assert f'<option value="{source["id"]}" >#{source["id"]} surrogate' in page.text
    form = {**FORM, "dataset_id": str(digits(client)["id"]), "transfer_source_ids": [str(source["id"])]}
    response = client.post("/audits/new", data=form, follow_redirects=False)
    assert response.status_code == 303, response.text
    [audit] = audits(client)
    assert audit["transfer_source_ids"] == [source["id"]]
    edit = client.get(f"/audits/{audit['id']}/edit")
    assert f'<option value="{source["id"]}" selected>#{source["id"]} surrogate' in edit.text
    # deselecting every source clears them; the audited model itself is refused with a message
    cleared = client.post(f"/audits/{audit['id']}/edit", data={**form, "transfer_source_ids": []})
    assert (
        cleared.status_code == 200
        and client.get(f"{API}/audits/{audit['id']}").json()["transfer_source_ids"] is None
    )
    refused = client.post(
        f"/audits/{audit['id']}/edit", data={**form, "transfer_source_ids": [str(candidate["id"])]}
    )
    assert refused.status_code == 422 and "are also audited" in refused.text


def test_the_run_page_shows_the_transfer_row_and_links_the_transfer_job(client, app, source):
    app.state.audit_dispatch = RecordingDispatch()
    register_version(client, "gap-cnn")
    audit = client.post(
        f"{API}/audits",
        json={
            "name": "with sources",
            "model_name": MODEL_NAME,
            "dataset_id": digits(client)["id"],
            "config": AUDIT_CONFIG,
            "transfer_source_ids": [source["id"]],
        },
    ).json()
    runs = []
    for _ in range(2):
        run = client.post(f"{API}/audits/{audit['id']}/run").json()
        judge(app, run["id"])
        runs.append(client.get(f"{API}/audits/{audit['id']}/runs/{run['id']}").json())
    assert runs[1]["verdict"] == "passed", runs[1]["reason"]
    candidate = runs[1]["comparisons"][0]["candidate"]
    transfer_id = candidate["transfer_job_id"]
    assert client.get(f"{API}/transfer/{transfer_id}").json()["status"] == "succeeded"
    page = client.get(f"/audits/{audit['id']}/runs/{runs[1]['id']}")
    assert page.status_code == 200
    assert (
        f'<a href="/transfers/{transfer_id}" data-role="transfer-link">transfer job #{transfer_id}</a>'
        in page.text
    )
    row = page.text[page.text.index('data-metric="transfer_worst_case_accuracy"') :]
    assert "black-box (transfer) worst-case accuracy" in row[: row.index("</tr>")]
