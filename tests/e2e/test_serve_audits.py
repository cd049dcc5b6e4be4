"""`advaudit serve` runs audits on schedule with nothing else installed (beat embedded), driven by the CLI."""

from __future__ import annotations

import time

import httpx
import pytest

from services.checkpoints import demo_model_path
from tests.support.serve_process import cli, serving

pytestmark = pytest.mark.timeout(300)

# A tick every second, and intervals down to 5 s, so a schedule fires within seconds.
FAST = {"ADVAUDIT_AUDIT_TICK_S": "1", "ADVAUDIT_AUDIT_MIN_INTERVAL_S": "5"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("serve-audits"), FAST) as served:
        yield served.url, served.data_dir


def runs(url: str, audit_id: str) -> list[dict]:
    return httpx.get(f"{url}/api/v1/audits/{audit_id}/runs", timeout=10).json()["data"]


def wait_for_run(url: str, audit_id: str, data_dir, condition, what: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = [run for run in reversed(runs(url, audit_id)) if condition(run)]
        if found:
            return found[0]
        time.sleep(0.5)
    log = "".join(
        (data_dir / name).read_text(errors="replace")[-3000:] for name in ("control.log", "worker.log")
    )
    pytest.fail(f"no {what} within 120 s: {runs(url, audit_id)}\n{log}")


def test_a_cli_audit_runs_on_schedule_and_catches_a_fragile_new_version(server):
    url, data_dir = server
    model = cli(
        url, "models", "add", str(demo_model_path("gap-cnn")), "--name", "digits-net", "--dataset-id", "1"
    )
    assert model.returncode == 0, model.stdout + model.stderr
    added = cli(
        url,
        "audits",
        "add",
        "--name",
        "every-5s",
        "--model-name",
        "digits-net",
        "--dataset-id",
        "1",
        "--interval",
        "5s",
        "--on-new-version",
        "--eps",
        "0,4/255,8/255",
        "--cam",
        "none",
    )
    assert added.returncode == 0, added.stdout + added.stderr
    assert "every 5 s, and on each new version" in added.stdout
    audit_id = added.stdout.split()[1].rstrip(":")

    first = wait_for_run(url, audit_id, data_dir, lambda r: r["verdict"], "scheduled verdict")
    assert (first["trigger"], first["verdict"]) == ("schedule", "baseline")

    fragile = cli(
        url,
        "models",
        "add",
        str(demo_model_path("gap-cnn-fragile")),
        "--name",
        "digits-net",
        "--dataset-id",
        "1",
    )
    assert fragile.returncode == 0, fragile.stdout + fragile.stderr
    version = wait_for_run(
        url,
        audit_id,
        data_dir,
        lambda r: r["trigger"] == "new_version" and r["verdict"],
        "new-version verdict",
    )
    assert version["verdict"] == "regressed", version["reason"]

    now = cli(url, "audits", "run", audit_id, "--wait")
    assert now.returncode == 1, now.stdout + now.stderr  # regressed: a CI step running this fails
    assert "verdict regressed" in now.stdout and "REGRESSED" in now.stdout and "accuracy" in now.stdout
    shown = cli(url, "audits", "show", audit_id)
    assert shown.returncode == 0 and "every-5s" in shown.stdout and "regressed" in shown.stdout
    listed = cli(url, "audits", "list")
    assert listed.returncode == 0 and "every-5s" in listed.stdout
    scheduled = [run["slot"] for run in runs(url, audit_id) if run["trigger"] == "schedule"]
    assert len(scheduled) == len(set(scheduled))


def test_bad_audits_from_the_cli_are_one_line(server):
    url, _ = server
    bad = cli(
        url,
        "audits",
        "add",
        "--name",
        "bad",
        "--model-name",
        "nope",
        "--dataset-id",
        "1",
        "--cron",
        "0 3 * * *",
        "--timezone",
        "Mars/Olympus",
    )
    assert bad.returncode == 2 and bad.stdout.startswith("error: 422") and "time zone" in bad.stdout
    short = cli(
        url,
        "audits",
        "add",
        "--name",
        "bad",
        "--model-name",
        "nope",
        "--dataset-id",
        "1",
        "--interval",
        "soon",
    )
    assert short.returncode == 2 and "duration" in short.stderr
