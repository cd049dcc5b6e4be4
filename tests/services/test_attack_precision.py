"""BIM and PGD with their gradient steps in bf16: the model itself decides every success."""

from __future__ import annotations

import pytest
import torch

from services.attack_precision import bf16_steps
from services.attack_specs import AttackSpec, SanityProbe
from services.checkpoints import load_model
from services.datasets import load_dataset
from services.errors import ConfigError
from services.iterative import gradient_attack, near_boundary
from services.robust import robust_over_eps
from services.specs import EvaluationConfig
from services.sweep import run_sweep


@pytest.fixture(scope="module")
def demo():
    """A trained demo CNN on 96 digits, frozen."""
    dataset = load_dataset("digits")
    model = load_model("demo:gap-cnn", input_shape=dataset.info.input_shape).module.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = next(iter(dataset.batches(96)))
    return model, x, y


def forward_of(model):
    return lambda x: model(x).float()


@pytest.mark.parametrize("name", ["bim", "pgd"])
def test_a_success_is_the_models_own_prediction(demo, name):
    model, x, y = demo
    steps = bf16_steps(model, torch.device("cpu"), None)
    spec = AttackSpec(name, steps=10)
    fooled, last = gradient_attack(
        spec, forward_of(model), x, y, 8 / 255, torch.arange(len(y)), steps_forward=steps
    )
    assert 0 < int(fooled.sum()) < len(y)
    with torch.no_grad():
        wrong = model(last).argmax(dim=1) != y
    assert torch.equal(fooled, fooled & wrong)  # every sample called fooled: the fp32 model misclassifies it
    assert float((last - x).abs().max()) <= 8 / 255 + 1e-6


def test_a_step_forward_claiming_success_everywhere_decides_nothing(demo):
    model, x, y = demo

    def lying(
        a: torch.Tensor,
    ) -> torch.Tensor:  # the model's gradient, but logits that call every sample fooled
        return model(a).float() + torch.nn.functional.one_hot((y[: len(a)] + 1) % 10, 10).float() * 1e4

    spec = AttackSpec("bim", steps=1)  # one step: every sample is still in the batch, so y[: len(a)] lines up
    eps = 0.5 / 255  # too small to fool the demo CNN on most samples
    fooled, last = gradient_attack(
        spec, forward_of(model), x, y, eps, torch.arange(len(y)), steps_forward=lying
    )
    with torch.no_grad():
        wrong = model(last).argmax(dim=1) != y
    assert int(fooled.sum()) < len(y) // 2  # unconfirmed, every sample would have been called fooled
    assert torch.equal(fooled, fooled & wrong)


def test_bf16_steps_find_about_what_fp32_steps_find(demo):
    model, x, y = demo
    with torch.no_grad():
        correct = model(x).argmax(dim=1) == y
    spec = AttackSpec("pgd", steps=10)
    eps = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    ids = torch.arange(len(y))
    fp32 = robust_over_eps(spec, forward_of(model), x, y, eps, correct, ids, seed=0)
    steps = bf16_steps(model, torch.device("cpu"), None)
    bf16 = robust_over_eps(spec, forward_of(model), x, y, eps, correct, ids, seed=0, steps_forward=steps)
    counts_fp32, counts_bf16 = fp32.sum(dim=0).tolist(), bf16.sum(dim=0).tolist()
    assert counts_fp32[0] > counts_fp32[-1]  # the curve has a shape: the comparison means something
    assert all(abs(a - b) <= 2 for a, b in zip(counts_fp32, counts_bf16, strict=True)), (
        counts_fp32,
        counts_bf16,
    )


def test_the_sweep_uses_the_bf16_steps_only_when_asked(demo, monkeypatch):
    model, x, y = demo
    calls = []
    import services.sweep as sweep_module

    real = sweep_module.bf16_steps

    def counting(*args, **kwargs):
        forward = real(*args, **kwargs)

        def counted(a):
            calls.append(len(a))
            return forward(a)

        return counted

    monkeypatch.setattr(sweep_module, "bf16_steps", counting)
    outcomes = {}
    for precision in ("fp32", "bf16"):
        config = EvaluationConfig(
            eps=(0, 2 / 255, 8 / 255), attacks=("fgsm", "pgd"), attack_precision=precision
        )
        result = run_sweep(
            model,
            [(x, y)],
            num_samples=len(y),
            num_classes=10,
            eps=config.eps,
            attacks=config.attack_specs,
            probe=SanityProbe(0.0, False),
            attack_precision=config.attack_precision,
            inference_layout=config.inference_layout,  # auto: the channels_last copy decides
        )
        assert result.robust is not None
        outcomes[precision] = next(iter(result.robust.robust.values())).sum(dim=0).tolist()
        assert bool(calls) == (precision == "bf16")
    assert all(abs(a - b) <= 2 for a, b in zip(outcomes["fp32"], outcomes["bf16"], strict=True)), outcomes


def test_bf16_steps_need_an_iterative_attack():
    with pytest.raises(ConfigError, match="applies to bim and pgd"):
        EvaluationConfig(attacks=("fgsm",), attack_precision="bf16")
    with pytest.raises(ConfigError, match="unknown attack_precision"):
        EvaluationConfig(attack_precision="fp16")


def test_near_boundary_flags_the_samples_a_rounding_could_flip():
    logits = torch.tensor([[5.0, 4.9, 0.0], [5.0, 1.0, 0.0], [4.9, 5.0, 0.0]])
    y = torch.tensor([0, 0, 0])
    assert near_boundary(logits, y, None).tolist() == [True, False, True]
    assert near_boundary(logits, y, torch.tensor([1, 1, 2])).tolist() == [True, False, False]
