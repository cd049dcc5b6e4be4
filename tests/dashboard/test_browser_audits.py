"""Audits in headless chromium against `advaudit serve`: create one through the form, run it, catch a regression."""

from __future__ import annotations

import pytest

from tests.support.api import demo_bytes
from tests.support.browser import PageWatch, open_clean, plot_traces, screenshot

AUDIT_MODEL = "audit-digits"
VERDICT_TIMEOUT_MS = 120_000  # a run: the worker creates its job, evaluates it, then judges the run

pytestmark = pytest.mark.timeout(400)


def register(server, variant: str) -> dict:
    """The demo checkpoint `variant` as the next version of AUDIT_MODEL (a TorchScript archive)."""
    response = server.api.post(
        "/models",
        data={"name": AUDIT_MODEL, "dataset_id": str(server.digits["id"])},
        files={"file": (f"{variant}.pt", demo_bytes(variant))},
    )
    assert response.status_code == 201, response.text
    return response.json()


def wait_for_cam_layers(page) -> None:
    """The CAM list of the chosen model has loaded (submitting earlier would abort its request)."""
    page.wait_for_function(
        "() => document.querySelector('#cam').options.length > 2 && "
        "![...document.querySelectorAll('#cam option')].some(option => option.disabled)"
    )


def fill_audit_form(page, server) -> None:
    page.fill("#name", "digits robustness")
    page.select_option("#model_name", AUDIT_MODEL)
    wait_for_cam_layers(page)
    page.select_option("#dataset_id", str(server.digits["id"]))
    page.fill("#eps", "0,2/255,8/255")
    page.select_option("#targeted", "")
    page.select_option("#cam", "none")
    page.fill("#limit", "300")
    page.select_option("#device", "cpu")
    page.fill("#timezone", "Europe/Paris")


def run_now_and_wait(page, verdict: str) -> None:
    """Press Run now; the page follows the run and reloads itself with the verdict."""
    page.click("#run-now")
    page.wait_for_url("**/audits/*?queued=*")
    page.wait_for_selector(f"#latest-verdict .verdict-{verdict}", timeout=VERDICT_TIMEOUT_MS)
    page.wait_for_load_state("networkidle")


def test_create_an_audit_and_watch_it_catch_a_fragile_new_version(signed_in, server):
    stable = register(server, "gap-cnn")
    page = signed_in.new_page()
    watch = PageWatch(page)
    page.goto(f"{server.url}/audits", wait_until="networkidle")
    page.click("#new-audit")
    page.wait_for_url(f"{server.url}/audits/new")
    fill_audit_form(page, server)
    page.fill("#cron", "0 3 * * 8")  # there is no 8th weekday: the form comes back with the message
    page.click("#submit-audit")
    assert "outside 0…7" in page.inner_text("#form-errors")
    assert page.input_value("#eps") == "0,2/255,8/255" and page.input_value("#timezone") == "Europe/Paris"
    screenshot(page, "audit-form-errors")
    watch.problems.clear()  # the 422 of that answer was expected

    page.fill("#cron", "0 3 * * 1")
    wait_for_cam_layers(page)
    page.click("#submit-audit")
    page.wait_for_url(f"{server.url}/audits/*")
    audit_id = int(page.url.rsplit("/", 1)[1])
    assert "cron 0 3 * * 1 (Europe/Paris)" in page.inner_text("#audit-definition")
    assert page.inner_text("#timeline-empty")

    run_now_and_wait(page, "baseline")
    fragile = register(server, "gap-cnn-fragile")
    run_now_and_wait(page, "regressed")
    screenshot(page, "audit-regressed")
    watch.assert_clean("audit page")

    assert page.inner_text("#audit-definition [data-role=verdict]") == "regressed"
    traces = {trace["name"]: trace["points"] for trace in plot_traces(page, "audit-timeline")}
    assert traces == {"robust AUC": 2, "clean accuracy": 2, "regressed run": 1}
    titles = page.evaluate(
        "() => { const l = document.getElementById('audit-timeline').layout; "
        "return [l.xaxis.title.text, l.yaxis.title.text]; }"
    )
    assert titles == ["run time (UTC)", "clean accuracy and robust AUC (%)"]
    regressed_rows = page.locator("#latest-verdict tr.regressed")
    flagged = regressed_rows.count()
    assert flagged >= 1
    rows = [regressed_rows.nth(i).inner_text() for i in range(flagged)]
    assert any("8/255" in row for row in rows), rows  # the fragile version loses most at the largest ε
    links = page.locator("#latest-verdict a[data-role=report-link]")
    assert links.count() == 2
    candidate, baseline = (links.nth(i).get_attribute("href") for i in range(2))
    assert "v2" in links.nth(0).inner_text() and "v1" in links.nth(1).inner_text()
    assert page.locator("#runs-table tbody tr").count() == 2
    assert page.locator("#runs-table tr.regressed [data-role=verdict]").inner_text() == "regressed"

    page.click("#latest-verdict .section-head a")  # the run's own page
    page.wait_for_url(f"{server.url}/audits/{audit_id}/runs/*")
    page.wait_for_load_state("networkidle")
    assert page.locator("#run-result tr.regressed").count() == flagged
    assert f"/models/{fragile['id']}" in page.inner_html("#run-jobs")
    assert "none (no webhook URL)" in page.inner_text("#webhook-delivery")
    screenshot(page, "audit-run")
    for href in (candidate, baseline):  # both reports open
        page.click(f"#run-result a[href='{href}']")
        page.wait_for_url(f"{server.url}{href}")
        page.wait_for_selector("#accuracy-curve .main-svg")
        page.wait_for_load_state("networkidle")  # its images too: leaving earlier would abort them
        page.go_back()
    watch.assert_clean("run page and reports")
    assert stable["id"] != fragile["id"]
    page.close()


def test_audit_list_shows_the_verdict_and_the_buttons_switch_the_audit(signed_in, server):
    page = open_clean(signed_in, f"{server.url}/audits", "audits")
    row = page.locator("#audits-table tbody tr", has_text="digits robustness")
    assert row.locator("[data-role=verdict]").inner_text() == "regressed"
    assert row.locator("[data-role=enabled]").inner_text() == "enabled"
    row.locator("a", has_text="digits robustness").click()
    page.click("#disable-audit")
    page.wait_for_selector("#enable-audit")
    assert page.inner_text("h1 [data-role=enabled]") == "disabled"
    assert "disabled" in page.inner_text("#audit-definition")
    page.click("#enable-audit")
    page.wait_for_selector("#disable-audit")
    assert page.inner_text("h1 [data-role=enabled]") == "enabled"
    response = page.goto(f"{server.url}/audits/999999")
    assert response.status == 404 and "Audit 999999 does not exist" in page.inner_text("#error-detail")
    page.close()


ERROR_RUN = """() => {  // a run that ended in error, drawn by the page's own script next to the judged ones
  const element = document.getElementById("audit-timeline"), points = Dash.embedded("timeline-data");
  drawTimeline(element, [...points, {run_id: 0, at: points[points.length - 1].at, verdict: "error",
    reason: "digits v3 · job 9 failed: <out of memory>"}], 0);
  Plotly.Fx.hover(element, [{curveNumber: element.data.length - 1, pointNumber: 0}]);
  return element.data[element.data.length - 1].customdata[0][1];
}"""


def test_edit_the_audit_then_delete_it_after_confirming(signed_in, server):
    page = signed_in.new_page()
    watch = PageWatch(page)
    page.goto(f"{server.url}/audits", wait_until="networkidle")
    page.locator("#audits-table a", has_text="digits robustness").click()
    page.wait_for_url(f"{server.url}/audits/*")
    audit_url, audit_id = page.url, page.url.rsplit("/", 1)[1]
    [run, *_] = server.api.get(f"/audits/{audit_id}/runs").json()["data"]
    page.click("#edit-audit")
    page.wait_for_url(f"{audit_url}/edit")
    wait_for_cam_layers(page)
    assert page.input_value("#name") == "digits robustness" and page.input_value("#eps") == "0,2/255,8/255"
    assert page.input_value("#cron") == "0 3 * * 1" and page.input_value("#timezone") == "Europe/Paris"
    assert page.input_value("#cam") == "none" and page.input_value("#limit") == "300"
    page.fill("#cron", "30 4 * * *")
    screenshot(page, "audit-edit")
    page.click("#submit-audit")
    page.wait_for_url(f"{audit_url}?saved=1")
    page.wait_for_load_state("networkidle")
    assert "cron 30 4 * * * (Europe/Paris)" in page.inner_text("#audit-definition")
    assert "saved" in page.inner_text("#audit-notice")

    assert page.evaluate(ERROR_RUN) == "digits v3 · job 9 failed: &#60;out of memory&#62;"
    assert {"name": "error", "points": 1} in plot_traces(page, "audit-timeline")
    assert "<out of memory>" in page.locator("#audit-timeline .hoverlayer").text_content()
    screenshot(page, "audit-timeline-error")

    page.click("#delete-audit")
    page.wait_for_url(f"{audit_url}/delete")
    assert "stay" in page.inner_text("#delete-confirm")
    screenshot(page, "audit-delete-confirm")
    page.click("#confirm-delete")
    page.wait_for_url(f"{server.url}/audits?deleted=1")
    assert "The audit was deleted" in page.inner_text("#audits-notice")
    assert page.locator("#audits-table tbody tr", has_text="digits robustness").count() == 0
    screenshot(page, "audits-after-delete")
    assert server.api.get(f"/audits/{audit_id}").status_code == 404
    assert server.api.get(f"/jobs/{run['jobs'][0]['job_id']}").json()["status"] == "succeeded"
    watch.assert_clean("edit and delete")
    page.close()
