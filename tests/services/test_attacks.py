"""FGSM engine: golden values, properties, and equality with torchattacks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from services.attacks import fgsm_directions, frozen_eval, perturb
from services.errors import ConfigError, EvaluationCancelled, ModelError
from services.specs import TargetPolicy
from services.sweep import run_sweep
from tests.conftest import batches_of


def linear_model() -> nn.Module:
    """f(x) = W·flatten(x) with W chosen so the gradients are easy to compute by hand."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -1.0, 2.0, 0.0], [0.0, 1.0, -1.0, 1.0]]))
    return model.eval()


def test_golden_untargeted_direction_and_outcomes():
    # logits at x = 0.5: [1.0, 0.5]; p = softmax = [0.6225, 0.3775]; label 0:
    # ∇x CE = (p − e0)·W = −0.3775·[1,−1,2,0] + 0.3775·[0,1,−1,1] = [−0.3775, 0.755, −1.1325, 0.3775]
    model = linear_model()
    x = torch.full((1, 1, 2, 2), 0.5)
    y = torch.tensor([0])
    logits, direction, _, _ = fgsm_directions(model, x, y)
    assert torch.allclose(logits, torch.tensor([[1.0, 0.5]]))
    assert direction.flatten().tolist() == [-1.0, 1.0, -1.0, 1.0]
    # ε = 0.05 → x' = [.45,.55,.45,.55], logits [0.8, 0.65]: still class 0.
    # ε = 0.10 → x' = [.40,.60,.40,.60], logits [0.6, 0.8]: class 1.
    result = run_sweep(model, [(x, y)], num_samples=1, num_classes=2, eps=(0.0, 0.05, 0.1))
    assert result.pred.tolist() == [[0, 0, 1]]
    p = torch.tensor([0.6, 0.8]).softmax(0).max().item()
    assert result.conf[0, 2].item() == pytest.approx(p, rel=1e-6)


def test_golden_targeted_direction_and_clamp():
    # target 1: ∇x CE = (p − e1)·W = 0.6225·([1,−1,2,0] − [0,1,−1,1]) = 0.6225·[1, −2, 3, −1]; step = −sign.
    model = linear_model()
    x = torch.tensor([[[[0.0, 1.0], [0.02, 0.5]]]])
    y = torch.tensor([0])
    logits, _, t_direction, targets = fgsm_directions(model, x, y, lambda logits: torch.tensor([1]))
    assert targets.tolist() == [1]
    assert t_direction.flatten().tolist() == [-1.0, 1.0, -1.0, 1.0]
    adv = perturb(x, t_direction, 0.1)
    # 0.0 − 0.1 → clamped to 0; 1.0 + 0.1 → clamped to 1.
    assert torch.allclose(adv.flatten(), torch.tensor([0.0, 1.0, 0.0, 0.6]))


def test_eps_zero_changes_nothing_and_linf_bound(tiny_net, tiny_batch):
    x, y = tiny_batch
    eps = (0.0, 1 / 255, 0.03, 0.2)
    result = run_sweep(tiny_net, batches_of(x, y, 10), num_samples=len(y), num_classes=4, eps=eps,
                       keep_directions=True)
    assert torch.equal(result.pred[:, 0], result.clean_pred)
    assert torch.equal(result.inputs, x)
    for e in eps:
        adv = perturb(result.inputs, result.directions.float(), e)
        assert (adv - x).abs().max().item() <= e + 1e-7
        assert adv.min() >= 0 and adv.max() <= 1


def per_eps_recomputation(model, x, y, eps):
    """The slow reference: a fresh gradient per ε, as a per-ε attack loop would do."""
    preds = []
    for e in eps:
        xr = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xr), y)
        (grad,) = torch.autograd.grad(loss, xr)
        with torch.no_grad():
            preds.append(model(torch.clamp(xr + e * grad.sign(), 0, 1)).argmax(1))
    return torch.stack(preds, dim=1)


def test_one_gradient_sweep_equals_per_eps_recomputation(tiny_net, tiny_batch):
    x, y = tiny_batch
    eps = (0.0, 2 / 255, 8 / 255, 0.1)
    result = run_sweep(tiny_net, [(x, y)], num_samples=len(y), num_classes=4, eps=eps)
    assert torch.equal(result.pred, per_eps_recomputation(tiny_net, x, y, eps))


def test_targeted_step_raises_target_probability(tiny_net, tiny_batch):
    x, y = tiny_batch
    result = run_sweep(tiny_net, [(x, y)], num_samples=len(y), num_classes=4, eps=(0.0,),
                       targeted_eps=(0.0, 0.5 / 255, 0.02), policy=TargetPolicy("next"))
    assert torch.equal(result.targets, (y + 1) % 4)
    assert (result.target_prob[:, 1] > result.target_prob[:, 0]).all()
    assert result.target_prob[:, 2].mean() > result.target_prob[:, 0].mean()


def test_target_policies(tiny_net, tiny_batch):
    x, y = tiny_batch

    def targets(policy, seed=0):
        return run_sweep(tiny_net, batches_of(x, y, 5), num_samples=len(y), num_classes=4, eps=(0.0,),
                         targeted_eps=(0.01,), policy=TargetPolicy.parse(policy), seed=seed).targets

    assert (targets("class:2") == 2).all()
    assert torch.equal(targets("next"), (y + 1) % 4)
    assert torch.equal(targets("least-likely"), tiny_net(x).argmin(1))
    random = targets("random")
    assert (random != y).all()
    assert torch.equal(random, targets("random"))
    assert not torch.equal(random, targets("random", seed=1))
    with pytest.raises(ConfigError, match="target class 9 does not exist"):
        targets("class:9")


def test_model_state_is_restored(tiny_net, tiny_batch):
    x, y = tiny_batch
    tiny_net.train()
    run_sweep(tiny_net, [(x, y)], num_samples=len(y), num_classes=4, eps=(0.1,))
    assert tiny_net.training
    assert all(p.requires_grad for p in tiny_net.parameters())
    with frozen_eval(tiny_net):
        assert not tiny_net.training and not any(p.requires_grad for p in tiny_net.parameters())


class NaNAfterPerturbation(nn.Module):
    def forward(self, x):
        logits = torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], dim=1)
        return torch.where(x.amax((1, 2, 3), keepdim=False)[:, None] > 0.999, math.nan, 1.0) * logits


def test_nan_logits_are_reported():
    x = torch.full((3, 1, 4, 4), 0.5)
    x[0, 0, 0, 0] = 0.9995  # pushed above the threshold by ε
    with pytest.raises(ModelError, match="NaN or infinite logits for 1 sample"):
        run_sweep(NaNAfterPerturbation(), [(x, torch.zeros(3, dtype=torch.long))], num_samples=3, num_classes=2,
                  eps=(0.0, 0.01))


def test_cancellation_stops_at_a_batch_boundary(tiny_net, tiny_batch):
    x, y = tiny_batch
    seen = []
    with pytest.raises(EvaluationCancelled):
        run_sweep(tiny_net, batches_of(x, y, 6), num_samples=len(y), num_classes=4, eps=(0.1,),
                  progress=lambda done, total: seen.append(done), should_stop=lambda: len(seen) >= 2)
    assert seen == [6, 12]


def test_adversarial_inputs_equal_torchattacks(tiny_net, tiny_batch):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = tiny_batch
    eps = (1 / 255, 8 / 255, 0.1)
    result = run_sweep(tiny_net, [(x, y)], num_samples=len(y), num_classes=4, eps=eps,
                       targeted_eps=eps, policy=TargetPolicy("next"), keep_directions=True)
    targets = (y + 1) % 4
    for e in eps:
        ours = perturb(result.inputs, result.directions.float(), e)
        assert torch.equal(ours, torchattacks.FGSM(tiny_net, eps=e)(x, y))
        attack = torchattacks.FGSM(tiny_net, eps=e)
        attack.set_mode_targeted_by_function(lambda images, labels: targets)
        ours_targeted = perturb(result.inputs, result.targeted_directions.float(), e)
        assert torch.equal(ours_targeted, attack(x, y))
