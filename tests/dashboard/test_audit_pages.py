"""Audit pages rendered in-process: the list with verdict badges, an audit's timeline and diff table, a run, 404s.

One app for the module: an audit on `digits-net` judged twice (gap-cnn v1: baseline; gap-cnn-fragile v2:
regressed), as the worker would judge it, plus a disabled interval audit that never ran.
"""

from __future__ import annotations

import re
import shutil

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from contracts.settings import MIB, Settings
from db import repositories as repo
from db.session import session_scope
from tests.support.api import API, FakeBroker, RecordingEnqueue
from tests.support.dashboard import (
    AUDIT_CONFIG,
    HTML,
    MODEL_NAME,
    RecordingDispatch,
    digits,
    embedded,
    judge,
    register_version,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def judged(tmp_path_factory, migrated_db):
    """(client, ids): the regressed audit with its two runs and jobs, and the audit that never ran."""
    data_dir = tmp_path_factory.mktemp("audit-pages") / "data"
    data_dir.mkdir()
    shutil.copy(migrated_db, data_dir / "advaudit.db")
    settings = Settings(data_dir=data_dir, auth="off", max_upload_bytes=2 * MIB, allowed_hosts=["testserver"])
    app = create_app(settings, enqueue=RecordingEnqueue(), broker=FakeBroker(), listen_host="127.0.0.1")
    app.state.audit_dispatch = RecordingDispatch()
    with TestClient(app) as client:
        stable = register_version(client, "gap-cnn")
        audit = client.post(
            f"{API}/audits",
            json={
                "name": "digits nightly",
                "model_name": MODEL_NAME,
                "dataset_id": digits(client)["id"],
                "config": AUDIT_CONFIG,
                "cron": "0 3 * * *",
                "timezone": "Europe/Paris",
                "webhook_url": "https://hooks.example.com/advaudit",
            },
        ).json()
        idle = client.post(
            f"{API}/audits",
            json={
                "name": "hourly fixed",
                "model_ids": [stable["id"]],
                "dataset_id": digits(client)["id"],
                "config": AUDIT_CONFIG,
                "interval_s": 3600,
                "enabled": False,
            },
        ).json()
        runs = []
        for variant in (None, "gap-cnn-fragile"):
            if variant:
                register_version(client, variant)
            run = client.post(f"{API}/audits/{audit['id']}/run").json()
            judge(app, run["id"])
            runs.append(client.get(f"{API}/audits/{audit['id']}/runs/{run['id']}").json())
        with session_scope(app.state.sessions) as session:  # as the webhook task records a failed delivery
            repo.audits.update_run(
                session=session,
                run=repo.audits.get_run(session=session, run_id=runs[1]["id"]),
                webhook_status="failed",
                webhook_attempts=5,
                webhook_error="HTTP 500 from hooks.example.com",
            )
        yield client, {"audit": audit, "idle": idle, "baseline_run": runs[0], "regressed_run": runs[1]}


def section(html: str, element_id: str, end: str = "</section>") -> str:
    start = html.index(f'id="{element_id}"')
    return html[start : html.index(end, start)]


def test_the_runs_were_judged_baseline_then_regressed(judged):
    _, ids = judged
    assert ids["baseline_run"]["verdict"] == "baseline", ids["baseline_run"]["reason"]
    assert ids["regressed_run"]["verdict"] == "regressed", ids["regressed_run"]["reason"]


def test_audit_list_shows_schedules_states_and_verdict_badges(judged):
    client, ids = judged
    page = client.get("/audits")
    assert page.status_code == 200 and 'href="/audits/new"' in page.text
    table = section(page.text, "audits-table", "</table>")
    regressed = table[table.index(f'data-audit-id="{ids["audit"]["id"]}"') :]
    regressed = regressed[: regressed.index("</tr>")]
    assert 'class="badge verdict-regressed"' in regressed and "cron 0 3 * * * (Europe/Paris)" in regressed
    assert "newest <strong>digits-net</strong>" in regressed and "digits" in regressed
    assert 'class="badge enabled"' in regressed and f'href="/audits/{ids["audit"]["id"]}"' in regressed
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:00:00 UTC", regressed)  # the next 03:00 Paris slot, in UTC
    idle = table[table.index(f'data-audit-id="{ids["idle"]["id"]}"') :]
    idle = idle[: idle.index("</tr>")]
    assert 'class="badge verdict-none"' in idle and "none yet" in idle and "every 1 h" in idle
    assert 'class="badge disabled"' in idle and f'href="/models/{ids["idle"]["model_ids"][0]}"' in idle
    nav = page.text[page.text.index("<nav") : page.text.index("</nav>")]
    assert 'href="/audits" class="active"' in nav


def test_audit_page_shows_the_definition_timeline_runs_and_latest_diff(judged):
    client, ids = judged
    audit, baseline, regressed = ids["audit"], ids["baseline_run"], ids["regressed_run"]
    page = client.get(f"/audits/{audit['id']}")
    assert page.status_code == 200
    definition = section(page.text, "audit-definition")
    assert "cron 0 3 * * * (Europe/Paris)" in definition and "0/255, 2/255, 8/255" in definition
    assert "newest version of <strong>digits-net</strong>" in definition and "v2" in definition
    assert (
        "https://hooks.example.com/advaudit" in definition and "Robust AUC drop: <strong>3 pp" in definition
    )
    points = embedded(page.text, "timeline-data")
    assert [(p["run_id"], p["verdict"], p["regressed"], p["version"]) for p in points] == [
        (baseline["id"], "baseline", False, "v1"),
        (regressed["id"], "regressed", True, "v2"),
    ]
    assert all(0 < p["robust_auc"] < p["clean_accuracy"] <= 1 for p in points)
    assert 'id="audit-timeline"' in page.text and '<script src="/static/audits.js">' in page.text
    latest = section(page.text, "latest-verdict")
    assert 'class="badge verdict-regressed"' in latest and regressed["reason"] in latest
    [comparison] = regressed["comparisons"]
    candidate, reference = comparison["candidate"]["job_id"], comparison["baseline"]["job_id"]
    assert f'href="/jobs/{candidate}"' in latest and f'href="/jobs/{reference}"' in latest
    flagged = [row for row in comparison["rows"] if row["regressed"]]
    assert flagged and latest.count('<tr data-metric="accuracy" class="regressed">') == sum(
        row["metric"] == "accuracy" for row in flagged
    )
    assert "8/255" in latest and "0.0314" in latest and " pp" in latest
    runs = section(page.text, "runs-table", "</table>")
    assert runs.count("<tr data-run-id=") == 2 and 'class="badge verdict-baseline"' in runs
    assert f'href="/audits/{audit["id"]}/runs/{regressed["id"]}"' in runs
    assert "failed" in runs and "5 attempts" in runs and "HTTP 500 from hooks.example.com" in runs
    assert 'id="run-now"' in page.text and 'action="/audits/{}/disable"'.format(audit["id"]) in page.text


def test_run_page_shows_the_jobs_webhook_and_diff_table_with_report_links(judged):
    client, ids = judged
    audit, regressed = ids["audit"], ids["regressed_run"]
    page = client.get(f"/audits/{audit['id']}/runs/{regressed['id']}")
    assert page.status_code == 200 and 'class="badge verdict-regressed"' in page.text
    jobs = section(page.text, "run-jobs")
    [job] = regressed["jobs"]
    assert f'href="/jobs/{job["job_id"]}"' in jobs and "succeeded" in jobs and "v2" in jobs
    delivery = section(page.text, "run-live")
    assert "failed" in delivery and "after 5" in delivery and "HTTP 500 from hooks.example.com" in delivery
    result = section(page.text, "run-result")
    comparison = regressed["comparisons"][0]
    assert f'href="/jobs/{comparison["baseline"]["job_id"]}"' in result
    assert f'href="/jobs/{comparison["candidate"]["job_id"]}"' in result
    assert result.count('class="regressed"') == regressed["regressed_metrics"] >= 1
    assert "clean accuracy" in result and "robust AUC" in result and "not checked" not in result


def test_the_first_run_page_says_it_is_the_baseline(judged):
    client, ids = judged
    page = client.get(f"/audits/{ids['audit']['id']}/runs/{ids['baseline_run']['id']}")
    assert page.status_code == 200 and 'class="badge verdict-baseline"' in page.text
    assert "no baseline to compare with" in page.text and 'class="regressed"' not in page.text
    assert "pending" in section(page.text, "run-live")  # the webhook of a finished run waits for its task


def test_an_audit_without_runs_explains_how_to_start(judged):
    client, ids = judged
    page = client.get(f"/audits/{ids['idle']['id']}")
    assert (
        page.status_code == 200
        and 'id="timeline-empty"' in page.text
        and 'id="latest-verdict"' not in page.text
    )
    assert "No runs yet" in page.text and 'id="enable-audit"' in page.text
    assert "none: the audit is disabled" in page.text


def test_unknown_audits_and_runs_get_404_pages(judged):
    client, ids = judged
    audit, idle, run = ids["audit"]["id"], ids["idle"]["id"], ids["regressed_run"]["id"]
    for path, message in (
        (f"/audits/{audit + 100}", f"Audit {audit + 100} does not exist"),
        ("/audits/abc", "Audit &#39;abc&#39; does not exist"),
        (f"/audits/{audit}/runs/99999", f"Run 99999 of audit {audit} does not exist"),
        (f"/audits/{idle}/runs/{run}", f"Run {run} of audit {idle} does not exist"),
        (f"/audits/{audit}/runs/x1", "Run &#39;x1&#39; does not exist"),
    ):
        page = client.get(path, headers=HTML)
        assert page.status_code == 404 and "text/html" in page.headers["content-type"], path
        assert message in page.text, (path, page.text[-1500:])
    for path in (f"/audits/{audit + 100}/run", f"/audits/{audit + 100}/enable"):
        assert client.post(path, headers=HTML).status_code == 404


def test_audit_scripts_are_served(judged):
    client, _ = judged
    for name in ("audits.js", "audit_form.js"):
        assert client.get(f"/static/{name}").status_code == 200, name


def test_runs_that_ended_in_error_are_on_the_timeline_with_their_reason(judged):
    client, ids = judged
    audit = client.post(
        f"{API}/audits",
        json={
            "name": "erring",
            "model_ids": ids["idle"]["model_ids"],
            "dataset_id": ids["idle"]["dataset_id"],
            "config": AUDIT_CONFIG,
            "enabled": False,
        },
    ).json()
    run = client.post(f"{API}/audits/{audit['id']}/run").json()
    reason = "digits-net v1 · job 9 failed: CUDA out of memory <oom>"
    with session_scope(client.app.state.sessions) as session:  # as the worker finishes a run whose job failed
        assert repo.audits.transition_run(
            session=session,
            run_id=run["id"],
            from_status="pending",
            to_status="finished",
            verdict="error",
            reason=reason,
            result={"comparisons": [], "errors": [reason]},
        )
    page = client.get(f"/audits/{audit['id']}")
    assert 'id="audit-timeline"' in page.text and 'id="timeline-empty"' not in page.text
    [point] = embedded(page.text, "timeline-data")
    assert (point["run_id"], point["verdict"], point["reason"]) == (run["id"], "error", reason)
    assert point["robust_auc"] is None and point["clean_accuracy"] is None and point["at"]
    assert "grey × at the bottom" in section(page.text, "timeline")
    judged_points = embedded(client.get(f"/audits/{ids['audit']['id']}").text, "timeline-data")
    assert all(point["verdict"] != "error" for point in judged_points)


def test_a_suspicious_run_has_its_badge_reason_and_flag(judged):
    """Last in the module: it adds a finished `suspicious` run to the idle audit (as the worker would judge a
    candidate that failed its sanity checks)."""
    client, ids = judged
    audit_id = ids["idle"]["id"]
    regressed = ids["regressed_run"]["comparisons"][0]
    candidate = {
        key: regressed["candidate"][key]
        for key in (
            "job_id",
            "run_id",
            "model_id",
            "model_name",
            "model_version",
            "clean_accuracy",
            "robust_auc",
        )
    } | {"worst_case_auc": 0.42, "sanity_verdict": "suspicious", "failed_checks": ["outputs_are_logits"]}
    reason = f"job {candidate['job_id']} (digits-net v2): sanity checks failed: outputs_are_logits (Outputs are logits) — 48 rows"
    with session_scope(client.app.state.sessions) as session:
        audit = repo.audits.get(session=session, audit_id=audit_id)
        run = repo.audits.create_run(session=session, audit=audit, slot="manual:suspicious", trigger="manual")
        assert repo.audits.transition_run(
            session=session,
            run_id=run.id,
            from_status="pending",
            to_status="finished",
            verdict="suspicious",
            reason=reason,
            result={
                "comparisons": [
                    {"candidate": candidate, "baseline": None, "rows": [], "regressed": False, "warnings": []}
                ],
                "errors": [],
            },
        )
        run_id = run.id
    api = client.get(f"{API}/audits/{audit_id}/runs/{run_id}").json()
    assert api["verdict"] == "suspicious" and api["worst_case_auc"] == 0.42
    assert api["comparisons"][0]["candidate"]["failed_checks"] == ["outputs_are_logits"]
    page = client.get(f"/audits/{audit_id}/runs/{run_id}").text
    assert '<span class="badge verdict-suspicious" data-role="verdict">suspicious</span>' in page
    assert "outputs_are_logits (Outputs are logits)" in page
    assert 'data-role="sanity-failed"' in page and 'data-role="sanity-flag"' in page
    runs = section(client.get(f"/audits/{audit_id}").text, "runs-table", "</table>")
    row = runs[runs.index(f'data-run-id="{run_id}"') :]
    assert 'data-verdict="suspicious" class="regressed"' in row[: row.index("</tr>")]
    listing = client.get("/audits").text
    assert "badge verdict-suspicious" in listing
    # the older runs keep their summaries (stored before these fields existed) and still read
    old = client.get(f"{API}/audits/{ids['audit']['id']}/runs").json()["data"]
    assert all(run["comparisons"][0]["candidate"]["sanity_verdict"] in ("passed", None) for run in old)
