"""A finished sweep is never thrown away: an audit, a CAM or a figure that fails becomes a warning."""

from __future__ import annotations

import json

import pytest

from services import evaluation, report
from services.checkpoints import load_model
from services.datasets import load_dataset
from services.errors import EvaluationCancelled
from services.evaluation import evaluate
from services.specs import EvaluationConfig
from tests.support.builders import write_functional_conv_model

EPS = (0.0, 4 / 255, 16 / 255)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def functional_torchscript(tmp_path):
    return write_functional_conv_model(tmp_path / "functional.pt")


def test_a_functional_convolution_keeps_its_sweep_and_explains_the_missing_grid(
    digits, functional_torchscript, tmp_path
):
    loaded = load_model(functional_torchscript, input_shape=(1, 32, 32))
    result = evaluate(loaded, digits, EvaluationConfig(eps=EPS, limit=32, batch_size=16))
    result.write(tmp_path / "out")
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [point["eps"] for point in document["fgsm"]] == list(EPS)
    assert document["architecture"]["layers"][0]["kernel_size"] == [3, 3]  # the audit reports what it can
    assert any(
        line.startswith("filter grid skipped") and "function call" in line for line in document["warnings"]
    )
    assert "filters.png" not in document["artifacts"] and not (tmp_path / "out" / "filters.png").exists()


def test_a_failing_architecture_audit_is_a_warning(digits, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("graph walk exploded")

    monkeypatch.setattr(evaluation, "audit_architecture", broken)
    loaded = load_model("demo:gap-cnn", input_shape=(1, 32, 32))
    result = evaluate(loaded, digits, EvaluationConfig(eps=EPS, limit=32, batch_size=16))
    document = result.to_dict()
    assert "architecture audit skipped: graph walk exploded" in document["warnings"]
    assert document["architecture"]["method"] == "unavailable" and document["architecture"]["layers"] == []
    assert len(document["fgsm"]) == len(EPS) and document["summary"]["macs"] is None


def test_a_cam_audit_failing_after_the_sweep_keeps_the_sweep(digits, monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("hook went missing")

    monkeypatch.setattr(evaluation, "cam_audit", broken)
    loaded = load_model("demo:gap-cnn", input_shape=(1, 32, 32))
    result = evaluate(loaded, digits, EvaluationConfig(eps=EPS, limit=32, batch_size=16, cam_samples=4))
    result.write(tmp_path / "out")
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    assert document["gradcam"] is None and len(document["fgsm"]) == len(EPS)
    assert "CAM audit and triptychs skipped: hook went missing" in document["warnings"]


def test_a_figure_that_fails_is_left_out_with_a_warning(digits, monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise ValueError("no font")

    monkeypatch.setattr(report.plots, "accuracy_curve", broken)
    loaded = load_model("demo:gap-cnn", input_shape=(1, 32, 32))
    result = evaluate(loaded, digits, EvaluationConfig(eps=EPS, limit=32, batch_size=16, cam="none"))
    result.write(tmp_path / "out")
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "accuracy_curve.png skipped: no font" in document["warnings"]
    assert "accuracy_curve.png" not in document["artifacts"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(document["artifacts"])


def test_cancellation_is_never_swallowed_by_an_optional_section(digits, monkeypatch):
    def cancelled(*args, **kwargs):
        raise EvaluationCancelled("evaluation cancelled")

    monkeypatch.setattr(evaluation, "cam_audit", cancelled)
    loaded = load_model("demo:gap-cnn", input_shape=(1, 32, 32))
    with pytest.raises(EvaluationCancelled):
        evaluate(loaded, digits, EvaluationConfig(eps=EPS, limit=16, batch_size=16, cam_samples=2))
