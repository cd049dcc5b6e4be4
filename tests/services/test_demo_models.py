"""The shipped demo models: accurate enough, and exactly what the training script reproduces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from services.datasets import digits_split
from services.zoo import ARCHITECTURES

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = REPO_ROOT / "services" / "demo_models"
FASTEST = "separable-cnn"


def _training_script():
    # scripts/ is not a package (no clash with services); load the file itself
    spec = importlib.util.spec_from_file_location(
        "train_demo_models", REPO_ROOT / "scripts" / "train_demo_models.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_shipped_model_reaches_95_percent_on_digits_test(name):
    model = torch.jit.load(str(MODELS / f"{name}.pt"))
    x, y = (torch.from_numpy(a) for a in digits_split("test"))
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert len(y) == 360
    assert accuracy >= 0.95, f"{name}: {accuracy:.2%}"
    assert not model.training


def test_retraining_reproduces_the_shipped_weights_exactly():
    script = _training_script()
    settings = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    model, accuracy = script.train_demo_model(FASTEST)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == settings  # restored
    assert not model.training and accuracy >= 0.95
    shipped = torch.jit.load(str(MODELS / f"{FASTEST}.pt")).state_dict()
    trained = model.state_dict()
    assert list(shipped) == list(trained)
    differing = [key for key in trained if not torch.equal(trained[key], shipped[key])]
    assert not differing, f"retrained weights differ from the shipped file in {differing}"
