"""Sanity checks: models that mask their gradients are caught, honest models pass, the worst case is honest."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from services.checkpoints import LoadedModel, load_model
from services.datasets import digits_split, load_dataset
from services.errors import ConfigError
from services.evaluation import evaluate
from services.sanity import CHECKS_BY_NAME
from services.specs import EvaluationConfig
from services.zoo import DEMO_MODELS

FAST = {"limit": 48, "cam": "none", "triptychs": 0, "eps": "0,2/255,8/255,16/255", "queries": 40}


class Shattered(nn.Module):
    """Rounds the input to 1/255 steps: the same function at every ε ≥ 1/255, but a zero gradient."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 255) / 255)


class Saturated(nn.Module):
    """Logits ×1000: the same arg-max, a one-hot softmax and a vanishing cross-entropy gradient."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 1000


class Probabilities(nn.Module):
    """Softmax outputs instead of logits."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).softmax(dim=1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def gap(digits):
    return load_model("demo:gap-cnn", input_shape=digits.info.input_shape)


def wrapped(loaded: LoadedModel, wrapper: type[nn.Module]) -> LoadedModel:
    module = wrapper(loaded.module)
    return LoadedModel(module=module, network=module, info=loaded.info)


def failed_checks(document: dict) -> set[str]:
    return {check["name"] for check in document["sanity"]["checks"] if check["status"] == "failed"}


@pytest.mark.parametrize(
    ("wrapper", "check"),
    [
        (Shattered, "gradients_usable"),
        (Saturated, "outputs_are_logits"),
        (Probabilities, "outputs_are_logits"),
    ],
)
def test_a_model_that_masks_its_gradients_is_suspicious(digits, gap, wrapper, check):
    document = evaluate(wrapped(gap, wrapper), digits, EvaluationConfig(**FAST)).to_dict()
    assert document["sanity"]["verdict"] == "suspicious"
    assert check in failed_checks(document)
    assert document["summary"]["sanity_verdict"] == "suspicious"
    assert set(failed_checks(document)) <= set(CHECKS_BY_NAME)


def test_the_shattered_model_fails_the_black_box_and_noise_checks_too(digits, gap):
    failed = failed_checks(evaluate(wrapped(gap, Shattered), digits, EvaluationConfig(**FAST)).to_dict())
    assert {"white_box_beats_black_box", "gradient_beats_noise"} <= failed


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_the_demo_models_pass(digits, name):
    loaded = load_model(f"demo:{name}", input_shape=digits.info.input_shape)
    config = EvaluationConfig(limit=64, cam="none", triptychs=0, targeted="next")
    document = evaluate(loaded, digits, config).to_dict()
    assert document["sanity"]["verdict"] == "passed", document["sanity"]
    statuses = {check["name"]: check["status"] for check in document["sanity"]["checks"]}
    # the default attacks hold no black-box one, so only that comparison is skipped; nothing fails
    assert statuses.pop("white_box_beats_black_box") == "skipped"
    assert set(statuses.values()) == {"passed"}, statuses


def test_a_normally_trained_network_passes(digits):
    torch.manual_seed(0)
    x, y = (torch.from_numpy(a) for a in digits_split("train"))
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(12):
        for start in range(0, len(y), 128):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[start : start + 128]), y[start : start + 128]).backward()
            optimiser.step()
    model.eval()
    gap = load_model("demo:gap-cnn", input_shape=digits.info.input_shape)
    loaded = LoadedModel(module=model, network=model, info=gap.info)
    document = evaluate(loaded, digits, EvaluationConfig(limit=96, cam="none", triptychs=0)).to_dict()
    assert document["clean"]["accuracy"] > 0.8  # it did learn
    assert document["sanity"]["verdict"] == "passed", document["sanity"]


def test_the_worst_case_of_a_masked_model_falls_close_to_its_network(digits, gap):
    config = EvaluationConfig(
        limit=48,
        cam="none",
        triptychs=0,
        eps="0,8/255,16/255",
        attacks="fgsm,pgd,square",
        loss="dlr",
        queries=1000,
    )
    plain = evaluate(gap, digits, config).to_dict()["summary"]
    for wrapper in (Shattered, Saturated):
        masked = evaluate(wrapped(gap, wrapper), digits, config).to_dict()
        fgsm_only = [point["accuracy"] for point in masked["fgsm"]]
        worst = masked["summary"]["worst_case_accuracy"]
        assert fgsm_only[1] > plain["worst_case_accuracy"][1] + 0.5  # FGSM alone is fooled by the mask
        for masked_accuracy, honest in zip(worst, plain["worst_case_accuracy"], strict=True):
            assert masked_accuracy <= honest + 0.1, wrapper.__name__  # the worst case is not


def test_sanity_thresholds_are_options(digits, gap):
    lenient = EvaluationConfig(**FAST, sanity_gradient_fraction=1.0)
    document = evaluate(wrapped(gap, Saturated), digits, lenient).to_dict()
    assert "gradients_usable" not in failed_checks(document)
    skipped = EvaluationConfig(**FAST, sanity_eps=0)
    checks = {c["name"]: c for c in evaluate(gap, digits, skipped).to_dict()["sanity"]["checks"]}
    assert checks["large_eps_reaches_chance"]["status"] == "skipped"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attacks": "fgsm,pgdx"}, "unknown attacks pgdx"),
        ({"attacks": ""}, "attacks is empty"),
        ({"attacks": "pgd,pgd"}, "repeats"),
        ({"norm": "l2", "attacks": "pgd,square"}, "square is an L∞ attack"),
        ({"norm": "l2", "attacks": "fgsm"}, "norm l2 applies to bim and pgd"),
        ({"loss": "hinge"}, "unknown loss"),
        ({"steps": 0}, "steps must be between 1 and 1000"),
        ({"sanity_tolerance": 2.0}, "sanity_tolerance must be between 0 and 1"),
        ({"step_size": float("nan")}, "step_size must be a number"),
    ],
)
def test_bad_attack_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        EvaluationConfig(**options)


def test_dlr_needs_three_classes(digits):
    two = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 2))
    gap = load_model("demo:gap-cnn", input_shape=digits.info.input_shape)
    info = type(gap.info)(**{**gap.info.__dict__, "num_classes": 2})
    binary = LoadedModel(module=two, network=two, info=info)
    with pytest.raises(ConfigError, match="dlr loss needs at least 3 classes"):
        evaluate(binary, digits, EvaluationConfig(loss="dlr", limit=4))


def test_a_suspicious_run_gets_the_black_box_attack_added_to_its_worst_case(digits, gap):
    config = EvaluationConfig(**(FAST | {"queries": 100}))  # fgsm and pgd: white-box only
    assert "square" not in config.attacks
    document = evaluate(wrapped(gap, Shattered), digits, config).to_dict()
    assert document["config"]["attacks"] == ["fgsm", "pgd", "square"]
    assert [entry["name"] for entry in document["attacks"] if not entry["targeted"]] == [
        "fgsm",
        "pgd",
        "square",
    ]
    assert any(
        "square (black-box, 100 queries) was added" in w and "gradients_usable" in w
        for w in document["warnings"]
    )
    pgd = next(entry for entry in document["attacks"] if entry["name"] == "pgd")
    worst = document["summary"]["worst_case_accuracy"]
    assert worst[-1] < pgd["points"][-1]["accuracy"] - 0.3  # the mask no longer holds the headline up
    assert document["robust"]["attacks"] == ["fgsm", "pgd", "square"]
    # an honest model is not escalated
    honest = evaluate(gap, digits, config).to_dict()
    assert honest["config"]["attacks"] == ["fgsm", "pgd"] and not any(
        "square" in w for w in honest["warnings"]
    )
