"""The advaudit command line, end to end, as a user runs it."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from advaudit.cli import main


def test_evaluate_writes_a_report_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "report"
    code = main(
        [
            "evaluate",
            "--model",
            "demo:gap-cnn",
            "--dataset",
            "digits",
            "--out",
            str(out),
            "--limit",
            "40",
            "--eps",
            "0,2/255,8/255",
            "--targeted",
            "least-likely",
            "--cam-samples",
            "4",
            "--save-adversarial",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "accuracy %" in printed and "robust AUC" in printed and str(out / "report.json") in printed
    assert "worst-case robust AUC" in printed and "worst-case acc. %" in printed
    assert "sanity: passed" in printed or "sanity: SUSPICIOUS — failed: " in printed
    document = json.loads((out / "report.json").read_text())
    assert document["config"]["eps"] == [0.0, 2 / 255, 8 / 255]
    assert document["config"]["targeted"] == "least-likely"
    assert (out / "adversarial.npz").is_file() and (out / "triptych_0.png").is_file()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--eps", "0,2"], "outside [0, 1]"),
        (["--eps", "abc"], "cannot read ε"),
        (["--targeted", "sideways"], "unknown targeted policy"),
        (["--cam", "nowhere"], "no layer 'nowhere'"),
        (["--model", "demo:nope"], "nope"),
        (["--dataset", "missing.npz"], "missing.npz"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_code_2(tmp_path, capsys, arguments, message):
    base = {"--model": "demo:gap-cnn", "--dataset": "digits", "--out": str(tmp_path / "r"), "--limit": "8"}
    for flag, value in zip(arguments[::2], arguments[1::2], strict=True):
        base[flag] = value
    argv = ["evaluate", *[part for pair in base.items() for part in pair]]
    assert main(argv) == 2
    printed = capsys.readouterr().out
    assert "error:" in printed and message in printed
    assert not (tmp_path / "r" / "report.json").exists()


class CreatesAFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickle_payload_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(pickle.dumps({"weights": CreatesAFile(marker)}))
    assert (
        main(["evaluate", "--model", str(checkpoint), "--dataset", "digits", "--out", str(tmp_path / "r")])
        == 2
    )
    assert "pickle" in capsys.readouterr().out.lower()
    assert not marker.exists()


def test_console_script_is_installed():
    executable = shutil.which("advaudit") or str(Path(sys.executable).parent / "advaudit")
    result = subprocess.run([executable, "evaluate", "--help"], capture_output=True, text=True, check=True)
    assert "--targeted-eps" in result.stdout and "--save-adversarial" in result.stdout


def test_demo_evaluates_every_demo_model_and_records_the_runs(tmp_path):
    executable = shutil.which("advaudit") or str(Path(sys.executable).parent / "advaudit")
    data_dir = tmp_path / "data"
    result = subprocess.run(
        [executable, "demo", "--out", str(tmp_path / "reports")],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "ADVAUDIT_DATA_DIR": str(data_dir)},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Robustness comparison" in result.stdout
    for name in ("gap-cnn", "separable-cnn", "dilated-cnn"):
        document = json.loads((tmp_path / "reports" / name / "report.json").read_text())
        assert document["clean"]["accuracy"] >= 0.95
        assert document["targeted_fgsm"]["policy"] == "next"
        assert document["gradcam"] is not None
        assert name in result.stdout

    # The service started on the same data directory lists the three runs as succeeded jobs.
    from fastapi.testclient import TestClient

    from api.main import create_app
    from contracts.settings import Settings

    with TestClient(
        create_app(
            Settings(data_dir=data_dir, auth="off", allowed_hosts=["testserver"]), listen_host="127.0.0.1"
        )
    ) as client:
        jobs = client.get("/api/v1/jobs").json()["data"]
        assert sorted(job["status"] for job in jobs) == ["succeeded"] * 3
        report = client.get(f"/api/v1/jobs/{jobs[0]['id']}/report").json()
        stored = json.loads((tmp_path / "reports" / "dilated-cnn" / "report.json").read_text())
        assert report == stored


def _summary(document: dict) -> str:
    from rich.console import Console

    from advaudit import console as terminal

    capture = Console(width=200, record=True, force_terminal=False)
    for line in terminal.sanity_lines(document):
        capture.print(line)
    capture.print(terminal.headline(document))
    capture.print(terminal.summary_table(document))
    return capture.export_text()


def _document(verdict: str = "passed", failed=()) -> dict:
    eps = [0.0, 8 / 255]
    return {
        "schema_version": 2,
        "model": {"source": "demo:gap-cnn"},
        "dataset": {"source": "digits", "num_samples": 8},
        "fgsm": [
            {"eps": e, "accuracy": a, "attack_success_rate": 1 - a}
            for e, a in zip(eps, (0.9, 0.5), strict=True)
        ],
        "targeted_fgsm": None,
        "robust": {"attacks": ["fgsm", "pgd"], "points": []},
        "sanity": {
            "verdict": verdict,
            "checks": [
                {
                    "name": name,
                    "status": "failed" if name in failed else "passed",
                    "detail": f"{name} numbers",
                }
                for name in ("gradients_usable", "outputs_are_logits")
            ],
        },
        "summary": {
            "clean_accuracy": 0.9,
            "robust_auc": 0.7,
            "worst_case_accuracy": [0.9, 0.125],
            "worst_case_auc": 0.51,
            "worst_case_attacks": ["fgsm", "pgd"],
            "sanity_verdict": verdict,
        },
    }


def test_the_summary_leads_with_the_worst_case_and_one_sanity_line():
    text = _summary(_document())
    assert "sanity: passed" in text and "worst-case robust AUC 0.510 (FGSM robust AUC 0.700)" in text
    assert "worst-case acc. %" in text and "12.5" in text
    bad = _summary(_document("suspicious", failed=("gradients_usable", "outputs_are_logits")))
    assert "sanity: SUSPICIOUS — failed: Gradients are usable, Outputs are logits" in bad
    assert "gradients_usable: gradients_usable numbers" in bad
    from advaudit import console as terminal

    assert terminal.sanity_lines(_document("suspicious", failed=("gradients_usable",)))[0].startswith(
        "[bold red]sanity: SUSPICIOUS"
    )
    old = _document()
    old["schema_version"] = 1
    for key in ("robust", "sanity"):
        old.pop(key)
    for key in ("worst_case_accuracy", "worst_case_auc", "worst_case_attacks", "sanity_verdict"):
        old["summary"].pop(key)
    text = _summary(old)
    assert "sanity: not checked (FGSM only, report v1)" in text and "robust AUC 0.700 (FGSM only" in text
    assert "worst-case acc. %" not in text and "FGSM accuracy %" in text


def test_help_and_client_commands_import_no_torch():
    """The CLI answers at once: argument parsing (every command's flags, the evaluation options included)
    must not import torch, torchvision or matplotlib."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from advaudit import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'matplotlib') if m in sys.modules)\n"
        "print(','.join(heavy) or 'none')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "none"
