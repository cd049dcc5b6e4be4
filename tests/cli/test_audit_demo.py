"""`advaudit audits demo`: an audit catches the fragile new version, on the embedded defaults, no server."""

from __future__ import annotations

import os
import subprocess

import pytest
from fastapi.testclient import TestClient

from advaudit.audit_demo import MODEL_NAME, run_demo
from api.main import create_app
from api.services.datasets import ensure_builtin_datasets
from contracts.settings import Settings, clear_settings_cache
from db import migrate
from db import repositories as repo
from db.base import utcnow
from db.session import make_engine, make_session_factory, session_scope
from tests.support.serve_process import EXECUTABLE

pytestmark = pytest.mark.timeout(180)


def test_the_demo_prints_a_regressed_verdict_with_its_numbers_and_records_it(tmp_path):
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADVAUDIT_")} | {"COLUMNS": "200"}
    result = subprocess.run(
        [EXECUTABLE, "audits", "demo", "--data-dir", str(data_dir), "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=150,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "verdict baseline" in out and "verdict regressed" in out
    assert "accuracy at ε=8/255 fell" in out and "REGRESSED" in out

    with TestClient(
        create_app(
            Settings(data_dir=data_dir, auth="off", allowed_hosts=["testserver"]), listen_host="127.0.0.1"
        )
    ) as client:
        [audit] = client.get("/api/v1/audits").json()["data"]
        assert audit["last_verdict"] == "regressed" and audit["run_on_new_version"]
        runs = client.get(f"/api/v1/audits/{audit['id']}/runs").json()["data"]
        assert [(run["trigger"], run["verdict"]) for run in runs] == [
            ("new_version", "regressed"),
            ("manual", "baseline"),
        ]
        report = client.get(runs[0]["comparisons"][0]["candidate"]["report_url"])
        assert report.status_code == 200 and report.json()["model"]["source"].startswith("digits-cnn:")


def test_the_demo_leaves_the_other_audits_of_its_data_dir_alone(tmp_path, monkeypatch):
    """It launches and judges its own runs only: another audit's runs and webhooks wait for the service."""
    settings = Settings(data_dir=tmp_path)
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    ensure_builtin_datasets(sessions)
    with session_scope(sessions) as session:
        digits = repo.datasets.get_by_name(session=session, name="digits")
        other = repo.audits.create(
            session=session,
            name="someone else's",
            dataset_id=digits.id,
            config={"eps": [0.0], "cam": "none", "triptychs": 0},
            thresholds={},
            model_name=MODEL_NAME,
            run_on_new_version=True,
            webhook_url="https://hooks.example.com/x",
        )
        waiting = repo.audits.create_run(
            session=session, audit=other, slot="manual:waiting", trigger="manual"
        )
        judged = repo.audits.create_run(session=session, audit=other, slot="manual:judged", trigger="manual")
        repo.audits.transition_run(
            session=session,
            run_id=judged.id,
            from_status="pending",
            to_status="finished",
            verdict="passed",
            finished_at=utcnow(),
            webhook_status="pending",
        )
        other_id, waiting_id, judged_id = other.id, waiting.id, judged.id
    monkeypatch.setenv("ADVAUDIT_DATA_DIR", str(tmp_path))  # restored after the test (the demo sets it)
    try:
        assert run_demo(data_dir=str(tmp_path), device="cpu") == 0
    finally:
        clear_settings_cache()
    with session_scope(sessions) as session:
        runs = {run.slot: run for run in repo.audits.list_runs(session=session, audit_id=other_id)}
        # its manual run and the two runs the demo's new versions triggered are still waiting for a tick
        assert {slot: run.status for slot, run in runs.items() if run.id != judged_id} == {
            slot: "pending" for slot in runs if slot != "manual:judged"
        } and len(runs) == 4
        assert runs["manual:waiting"].id == waiting_id
        assert (runs["manual:judged"].webhook_status, runs["manual:judged"].webhook_attempts) == (
            "pending",
            0,
        )
        assert repo.jobs.count(session=session) == 2  # the demo's two evaluations, nobody else's
    engine.dispose()
