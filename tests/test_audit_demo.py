"""`advaudit audits demo`: an audit catches the fragile new version, on the embedded defaults, no server."""

from __future__ import annotations

import os
import subprocess

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from db.settings import Settings
from tests.test_serve import EXECUTABLE

pytestmark = pytest.mark.timeout(180)


def test_the_demo_prints_a_regressed_verdict_with_its_numbers_and_records_it(tmp_path):
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADVAUDIT_")} | {"COLUMNS": "200"}
    result = subprocess.run([EXECUTABLE, "audits", "demo", "--data-dir", str(data_dir), "--device", "cpu"],
                            capture_output=True, text=True, env=env, timeout=150)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "verdict baseline" in out and "verdict regressed" in out
    assert "accuracy at ε=8/255 fell" in out and "REGRESSED" in out

    with TestClient(create_app(Settings(data_dir=data_dir, auth="off"), listen_host="127.0.0.1")) as client:
        [audit] = client.get("/api/v1/audits").json()["data"]
        assert audit["last_verdict"] == "regressed" and audit["run_on_new_version"]
        runs = client.get(f"/api/v1/audits/{audit['id']}/runs").json()["data"]
        assert [(run["trigger"], run["verdict"]) for run in runs] == [("new_version", "regressed"),
                                                                      ("manual", "baseline")]
        report = client.get(runs[0]["comparisons"][0]["candidate"]["report_url"])
        assert report.status_code == 200 and report.json()["model"]["source"].startswith("digits-cnn:")
