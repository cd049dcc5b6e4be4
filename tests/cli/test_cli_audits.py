"""`advaudit audits …` against a stand-in server: user text is printed as text, `run --wait` gives up on time."""

from __future__ import annotations

import pytest

from advaudit import audits as audit_commands
from advaudit.cli import build_parser, main
from advaudit.client import ServerError

NAME = "nightly [/] [bold]x[/bold] [disabled]"
AUDIT = {
    "id": 1,
    "name": NAME,
    "model_name": "net[/]",
    "model_ids": None,
    "dataset_id": 1,
    "cron": None,
    "timezone": None,
    "interval_s": 3600,
    "run_on_new_version": False,
    "enabled": False,
    "next_run_at": None,
    "baseline_job_id": None,
    "thresholds": {"accuracy_drop_pp": 5.0},
    "last_verdict": "regressed",
}
CANDIDATE = {"job_id": 9, "model_name": "net[/]", "model_version": "v2 [red]"}
RUN = {
    "id": 4,
    "trigger": "manual",
    "slot": "manual:[/]",
    "status": "finished",
    "verdict": "regressed",
    "reason": "accuracy fell [/] 18.6 pp",
    "clean_accuracy": 0.98,
    "robust_auc": 0.69,
    "regressed_metrics": 1,
    "comparisons": [
        {
            "candidate": CANDIDATE,
            "baseline": {**CANDIDATE, "job_id": 5, "model_version": "v1"},
            "rows": [
                {
                    "metric": "accuracy",
                    "eps": 8 / 255,
                    "baseline": 49.2,
                    "candidate": 30.6,
                    "delta": -18.6,
                    "threshold": 5.0,
                    "unit": "pp",
                    "direction": "drop",
                    "regressed": True,
                }
            ],
        }
    ],
}


class FakeServer:
    """Answers the client's requests from canned documents; `running` keeps a run unfinished forever."""

    running = False

    def __init__(self, server, token) -> None:
        pass

    def request(self, method: str, path: str, **kwargs):
        if path == "/audits" and method == "GET":
            return {"data": [AUDIT]}
        if path == "/audits" and method == "POST":
            raise ServerError(f"409: an audit named {NAME!r} exists already (id 1); pick another name")
        if path.endswith("/runs"):
            return {"data": [RUN]}
        if path.endswith("/run") or "/runs/" in path:
            return {**RUN, "status": "running", "verdict": None} if self.running else RUN
        return AUDIT


@pytest.fixture(autouse=True)
def server(monkeypatch):
    monkeypatch.setattr(audit_commands, "Client", FakeServer)
    monkeypatch.setattr(FakeServer, "running", False)
    monkeypatch.setenv("COLUMNS", "250")


@pytest.mark.parametrize("command", [["list"], ["show", "1"], ["run", "1", "--wait"]])
def test_user_text_with_markup_characters_is_printed_as_it_is(capsys, command):
    code = main(["audits", *command])
    out = capsys.readouterr().out
    assert code == (1 if command[0] == "run" else 0)  # the run regressed
    assert "[/]" in out
    if command[0] != "run":
        assert "[disabled]" in out and "[bold]x[/bold]" in out
    if command[0] != "list":
        assert "accuracy fell [/] 18.6 pp" in out and "v2 [red]" in out


def test_an_error_naming_user_text_is_printed_as_it_is(capsys):
    code = main(["audits", "add", "--name", NAME, "--model-name", "net", "--dataset-id", "1"])
    assert code == 2 and f"409: an audit named {NAME!r} exists already" in capsys.readouterr().out


def test_run_wait_gives_up_after_its_timeout(capsys, monkeypatch):
    monkeypatch.setattr(FakeServer, "running", True)
    now = [0.0]

    class Time:  # a clock that moves when the command sleeps
        @staticmethod
        def monotonic() -> float:
            return now[0]

        @staticmethod
        def sleep(seconds: float) -> None:
            now[0] += seconds

    monkeypatch.setattr(audit_commands, "time", Time)
    code = main(["audits", "run", "1", "--wait", "--timeout", "90s"])
    out = capsys.readouterr().out
    assert code == audit_commands.TIMEOUT_EXIT == 3
    assert "run 4 of audit 1 is still running after 90 s" in out and 90 <= now[0] <= 91
    assert build_parser().parse_args(["audits", "run", "1"]).timeout == 3600  # an hour unless told


def test_a_suspicious_run_fails_the_gate_in_red_naming_its_checks(capsys, monkeypatch):
    reason = "job 9 (net v2): sanity checks failed: outputs_are_logits (Outputs are logits) — 48 rows"
    suspicious = {**RUN, "verdict": "suspicious", "reason": reason, "worst_case_auc": 0.41}
    monkeypatch.setattr(FakeServer, "request", lambda self, method, path, **kwargs: suspicious)
    code = main(["audits", "run", "1", "--wait"])
    out = capsys.readouterr().out
    assert code == 1  # never a pass, never a baseline
    assert "verdict suspicious" in out and "outputs_are_logits (Outputs are logits)" in out
    from advaudit.console import VERDICT_STYLE, runs_table

    assert VERDICT_STYLE["suspicious"] == "bold red"
    table = runs_table([suspicious])
    assert [column.header for column in table.columns][5:8] == ["clean %", "worst AUC", "FGSM AUC"]


def test_the_worst_case_threshold_has_its_flag(capsys):
    args = build_parser().parse_args(
        [
            "audits",
            "add",
            "--name",
            "n",
            "--model-name",
            "m",
            "--dataset-id",
            "1",
            "--max-worst-case-drop",
            "2.5",
        ]
    )
    assert args.worst_case_drop_pp == 2.5


def test_transfer_sources_and_their_threshold_reach_the_request(monkeypatch):
    sent = {}

    def request(self, method, path, json=None, params=None):
        sent.update(method=method, path=path, body=json)
        return {**AUDIT, "id": 2, "name": "n"}

    monkeypatch.setattr(audit_commands.Client, "request", request)
    code = main(
        [
            "audits",
            "add",
            "--name",
            "n",
            "--model-name",
            "m",
            "--dataset-id",
            "1",
            "--transfer-source-id",
            "7",
            "--transfer-source-id",
            "8",
            "--max-transfer-drop",
            "2.5",
        ]
    )
    assert code == 0 and (sent["method"], sent["path"]) == ("POST", "/audits")
    assert sent["body"]["transfer_source_ids"] == [7, 8]
    assert sent["body"]["thresholds"] == {"transfer_worst_case_drop_pp": 2.5}
