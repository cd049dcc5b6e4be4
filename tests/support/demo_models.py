"""Where the shipped demo models live, how closely a retrained one must agree, and the training script."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = REPO_ROOT / "services" / "demo_models"
MIN_AGREEMENT = 0.97  # share of test predictions a retrained model must share with the shipped one


def training_script():
    """scripts/train_demo_models.py, loaded as a module."""
    # scripts/ is not a package (no clash with services); load the file itself
    spec = importlib.util.spec_from_file_location(
        "train_demo_models", REPO_ROOT / "scripts" / "train_demo_models.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def training_build() -> tuple[dict, dict]:
    """(the build the shipped models were trained on, this one): torch and the CPU features that pick the
    kernels, as TRAINED_ON.json records them (the thread count is fixed by the script)."""
    recorded = json.loads((MODELS / "TRAINED_ON.json").read_text())
    here = {key: value for key, value in training_script().training_environment().items() if key != "threads"}
    return {key: recorded.get(key) for key in here}, here
