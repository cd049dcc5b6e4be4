"""The job page of a schema 2 report: worst-case headline, every attack per ε, sanity checks and the red banner
of a suspicious evaluation; a version 1 report still renders, with its note; leaderboard and model flags."""

from __future__ import annotations

import copy
import html
import re

import pytest

from db import repositories as repo
from db.session import session_scope
from services.sanity import CHECKS_BY_NAME
from tests.support.api import API
from tests.support.dashboard import finish_job


def set_report(app, job_id: int, document: dict) -> None:
    with session_scope(app.state.sessions) as session:
        repo.jobs.get(session=session, job_id=job_id).report = copy.deepcopy(document)


def suspicious(document: dict, *names: str) -> dict:
    """The document with checks `names` failed (the sanity verdict follows)."""
    document = copy.deepcopy(document)
    for check in document["sanity"]["checks"]:
        if check["name"] in names:
            check["status"], check["detail"] = "failed", f"{check['name']}: 48 samples (100.0 %) out of line"
    document["sanity"]["verdict"] = document["summary"]["sanity_verdict"] = "suspicious"
    return document


def as_v1(document: dict) -> dict:
    """The document as a version 1 report was: FGSM only, no worst case, no sanity checks."""
    document = copy.deepcopy(document)
    document["schema_version"] = 1
    for key in ("attacks", "robust", "sanity"):
        document.pop(key)
    for key in ("worst_case_accuracy", "worst_case_auc", "worst_case_attacks", "sanity_verdict"):
        document["summary"].pop(key)
    return document


def section(text: str, element_id: str, end: str = "</section>") -> str:
    start = text.index(f'id="{element_id}"')
    return text[start : text.index(end, start)]


@pytest.fixture
def report(client, finished) -> dict:
    return client.get(f"{API}/jobs/{finished['id']}/report").json()


def test_a_passed_v3_report_shows_the_worst_case_every_attack_and_the_checks(client, finished, report):
    assert report["schema_version"] == 3 and report["summary"]["sanity_verdict"] == "passed"
    page = client.get(f"/jobs/{finished['id']}").text
    assert 'id="sanity-banner"' not in page and "sanity-banner" not in page
    tiles = section(page, "report")
    assert "worst-case robust AUC" in tiles and "FGSM robust AUC" in tiles
    assert f">{report['summary']['worst_case_auc']:.3f}<" in tiles
    assert f">{report['summary']['robust_auc']:.3f}<" in tiles
    assert "worst case ε = 16/255" in tiles
    worst = report["summary"]["worst_case_accuracy"][-1]
    assert f"{100 * worst:.1f} %" in tiles
    table = section(page, "attack-table", "</table>")
    untargeted = [entry["name"] for entry in report["attacks"] if not entry["targeted"]]
    assert [m for m in re.findall(r'data-attack="(\w+)"', table)] == untargeted
    worst_row = table[table.index('id="worst-case-row"') :]
    assert "<strong>worst case</strong>" in worst_row
    assert worst_row.count("<td><strong>") == len(report["fgsm"])
    checks = section(page, "sanity-table", "</table>")
    for check in report["sanity"]["checks"]:
        title = html.escape(CHECKS_BY_NAME[check["name"]].title)
        assert f'data-check="{check["name"]}" data-status="{check["status"]}"' in checks
        assert title in checks and html.escape(check["detail"], quote=False) in checks
    assert 'id="report-v1-note"' not in page


def test_a_suspicious_report_gets_a_red_banner_naming_each_failed_check_and_its_meaning(
    client, app, finished, report
):
    set_report(app, finished["id"], suspicious(report, "gradients_usable", "outputs_are_logits"))
    for path in (f"/jobs/{finished['id']}", f"/jobs/{finished['id']}/report-section"):
        page = client.get(path).text
        banner = section(page, "sanity-banner")
        assert 'role="alert"' in page[page.index('<section class="alert sanity-banner"') :][:80]
        assert "2 sanity checks failed" in banner
        for name in ("gradients_usable", "outputs_are_logits"):
            check = CHECKS_BY_NAME[name]
            assert html.escape(check.title) in banner and html.escape(check.meaning) in banner
            assert f"{name}: 48 samples (100.0 %) out of line" in banner
        assert "monotone_in_eps" not in banner
        assert 'data-sanity="suspicious"' in page and 'id="sanity-verdict">suspicious<' in page


def test_a_v1_report_renders_as_before_with_a_note(client, app, finished, report):
    set_report(app, finished["id"], as_v1(report))
    page = client.get(f"/jobs/{finished['id']}").text
    assert 'id="report-v1-note"' in page and "FGSM only (report v1)" in page
    assert 'id="sanity-banner"' not in page and 'id="sanity-none"' in page
    tiles = section(page, "report")
    assert "FGSM ε = 16/255" in tiles and "robust AUC (FGSM only)" in tiles
    assert f">{report['summary']['robust_auc']:.3f}<" in tiles
    table = section(page, "attack-table", "</table>")
    assert re.findall(r'data-attack="(\w+)"', table) == ["fgsm"]
    fgsm = f"{100 * report['fgsm'][-1]['accuracy']:.1f} %"
    assert fgsm in table[table.index('id="worst-case-row"') :]
    assert 'id="report-data"' in page and 'id="accuracy-curve"' in page


def test_leaderboard_and_model_pages_flag_a_suspicious_job_and_state_the_ranking_eps(
    client, app, gap_model, finished, report, npz_dataset
):
    other = finish_job(client, app, gap_model, npz_dataset, cam="none", eps=[0, "8/255", "16/255"])
    set_report(app, finished["id"], suspicious(report, "outputs_are_logits"))
    page = client.get("/compare", params={"job_ids": f"{finished['id']},{other['id']}"})
    assert page.status_code == 200, page.text
    text = page.text
    assert 'id="ranking-eps">16/255<' in text  # 0 and 16/255 are shared: 16/255 is the largest
    assert "ranked by worst-case accuracy at ε = 16/255" in text
    board = section(text, "leaderboard", "</table>")
    row = board[board.index(f'<tr data-job-id="{finished["id"]}"') :]
    row = row[: row.index("</tr>")]
    assert 'data-sanity="suspicious"' in row and 'data-role="sanity-flag"' in row
    assert f"Outputs are logits failed — {html.escape(CHECKS_BY_NAME['outputs_are_logits'].meaning)}" in row
    clean = board[board.index(f'<tr data-job-id="{other["id"]}"') :]
    assert 'data-role="sanity-flag"' not in clean[: clean.index("</tr>")]
    model = client.get(f"/models/{finished['model_id']}").text
    versions = section(model, "versions-table", "</table>")
    assert 'data-sanity="suspicious"' in versions and 'data-role="sanity-flag"' in versions
    assert "Outputs are logits failed" in versions
