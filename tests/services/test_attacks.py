"""FGSM engine: golden values, properties, and equality with torchattacks."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from services.attacks import fgsm_directions, frozen_eval, perturb
from services.errors import ConfigError, EvaluationCancelled, ModelError
from services.specs import TargetPolicy
from services.sweep import run_sweep
from tests.support.env import require
from tests.support.tiny import batches_of


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
    batches = batches_of(x, y, 10)
    result = run_sweep(tiny_net, batches, num_samples=len(y), num_classes=4, eps=eps, keep_directions=True)
    assert torch.equal(result.inputs, x)
    # The sweep reuses its clean logits at ε = 0, so comparing result.pred[:, 0] with result.clean_pred would
    # compare a tensor with itself. Recompute independently: a fresh gradient sign per batch, the ε = 0 step,
    # and a real forward of the model on it.
    directions, expected_pred, expected_conf = [], [], []
    for xb, yb in batches:
        xr = xb.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(tiny_net(xr), yb), xr)
        unchanged = perturb(xb, grad.sign(), 0.0)
        assert torch.equal(unchanged, xb)  # exactly x, not merely close
        with torch.no_grad():
            conf, pred = tiny_net(unchanged).softmax(dim=1).max(dim=1)
        directions.append(grad.sign())
        expected_pred.append(pred)
        expected_conf.append(conf)
    assert torch.equal(result.directions.float(), torch.cat(directions))
    assert torch.equal(result.pred[:, 0], torch.cat(expected_pred))
    assert torch.allclose(result.conf[:, 0], torch.cat(expected_conf), rtol=1e-6, atol=1e-7)
    for e in eps:
        adv = perturb(result.inputs, result.directions.float(), e)
        assert (adv - x).abs().max().item() <= e + 1e-7
        assert adv.min() >= 0 and adv.max() <= 1


class WorkCounter:
    """Counts, on the top module, gradient forwards, inference forwards and backward passes to the input.

    A forward under inference mode is an ε-step forward; a forward whose input requires grad is the gradient
    forward, and a hook on that input counts every backward pass that reaches it (autograd.grad or backward()).
    """

    def __init__(self, model: nn.Module) -> None:
        self.counts = Counter()
        self.per_batch = []
        self.handle = model.register_forward_pre_hook(self._pre_forward)

    def _pre_forward(self, module, args):
        (x,) = args
        if torch.is_inference_mode_enabled():
            self.counts["inference_forward"] += 1
        elif x.requires_grad:
            self.counts["gradient_forward"] += 1
            x.register_hook(self._backward)
        else:
            self.counts["other_forward"] += 1

    def _backward(self, grad):
        self.counts["backward"] += 1

    def end_of_batch(self, done, total):
        self.per_batch.append(dict(self.counts))
        self.counts.clear()


@pytest.mark.parametrize("policy", [None, "next", "least-likely"])
@pytest.mark.parametrize(
    ("eps", "targeted_eps"),
    [
        ((0.0, 2 / 255, 8 / 255), (0.0, 4 / 255)),
        ((1 / 255, 0.03, 0.1, 0.2), (0.01,)),
        ((0.0,), (0.0,)),
    ],
)
def test_work_per_batch_is_one_gradient_pass_and_one_forward_per_nonzero_eps(
    tiny_net, tiny_batch, monkeypatch, policy, eps, targeted_eps
):
    x, y = tiny_batch
    counter = WorkCounter(tiny_net)
    grad_calls = []
    real_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        grad_calls.append(len(counter.per_batch))  # the batch this gradient belongs to
        return real_grad(*args, **kwargs)

    monkeypatch.setattr("services.attacks.torch.autograd.grad", counting_grad)
    try:
        run_sweep(
            tiny_net,
            batches_of(x, y, 10),
            num_samples=len(y),
            num_classes=4,
            eps=eps,
            targeted_eps=targeted_eps,
            policy=TargetPolicy.parse(policy) if policy else None,
            progress=counter.end_of_batch,
        )
    finally:
        counter.handle.remove()
    modes = 2 if policy else 1
    # ε = 0 reuses the clean logits: only ε > 0 costs an inference forward
    steps = sum(e > 0 for e in eps) + (sum(e > 0 for e in targeted_eps) if policy else 0)
    expected = {"gradient_forward": 1, "backward": modes}
    if steps:
        expected["inference_forward"] = steps
    assert len(counter.per_batch) == 3  # batches of 10, 10 and 4
    for batch, counts in enumerate(counter.per_batch):
        assert counts == expected, f"batch {batch}"
        assert grad_calls.count(batch) == modes, f"batch {batch}"


inputs_near_the_bounds = hnp.arrays(
    np.float32,
    (2, 1, 3, 4),
    elements=st.one_of(
        st.sampled_from([0.0, 1.0]),
        st.floats(0.0, 2.0**-10, width=32),
        st.floats(1.0 - 2.0**-10, 1.0, width=32),
        st.floats(0.0, 1.0, width=32),
    ),
)
sign_directions = hnp.arrays(np.float32, (2, 1, 3, 4), elements=st.sampled_from([-1.0, 0.0, 1.0]))


@settings(max_examples=50, deadline=None)
@given(x=inputs_near_the_bounds, direction=sign_directions, eps=st.floats(0.0, 1.0))
def test_perturb_stays_in_the_box_and_the_eps_ball(x, direction, eps):
    xt, dt = torch.from_numpy(x), torch.from_numpy(direction)
    adv = perturb(xt, dt, eps)
    assert adv.dtype == torch.float32 and adv.shape == xt.shape
    assert adv.min().item() >= 0.0 and adv.max().item() <= 1.0
    assert (adv.double() - xt.double()).abs().max().item() <= eps + 1e-7
    # the reference, computed elementwise in float32 by numpy
    expected = np.clip(x + np.float32(eps) * direction, 0.0, 1.0)
    assert np.array_equal(adv.numpy(), expected)
    if eps == 0:
        assert torch.equal(adv, xt)


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
    result = run_sweep(
        tiny_net,
        [(x, y)],
        num_samples=len(y),
        num_classes=4,
        eps=(0.0,),
        targeted_eps=(0.0, 0.5 / 255, 0.02),
        policy=TargetPolicy("next"),
    )
    assert torch.equal(result.targets, (y + 1) % 4)
    assert (result.target_prob[:, 1] > result.target_prob[:, 0]).all()
    assert result.target_prob[:, 2].mean() > result.target_prob[:, 0].mean()


def test_target_policies(tiny_net, tiny_batch):
    x, y = tiny_batch

    def targets(policy, seed=0):
        return run_sweep(
            tiny_net,
            batches_of(x, y, 5),
            num_samples=len(y),
            num_classes=4,
            eps=(0.0,),
            targeted_eps=(0.01,),
            policy=TargetPolicy.parse(policy),
            seed=seed,
        ).targets

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
        run_sweep(
            NaNAfterPerturbation(),
            [(x, torch.zeros(3, dtype=torch.long))],
            num_samples=3,
            num_classes=2,
            eps=(0.0, 0.01),
        )


def test_cancellation_stops_at_a_batch_boundary(tiny_net, tiny_batch):
    x, y = tiny_batch
    seen = []
    with pytest.raises(EvaluationCancelled):
        run_sweep(
            tiny_net,
            batches_of(x, y, 6),
            num_samples=len(y),
            num_classes=4,
            eps=(0.1,),
            progress=lambda done, total: seen.append(done),
            should_stop=lambda: len(seen) >= 2,
        )
    assert seen == [6, 12]


def test_adversarial_inputs_equal_torchattacks(tiny_net, tiny_batch):
    torchattacks = require("torchattacks")
    x, y = tiny_batch
    eps = (1 / 255, 8 / 255, 0.1)
    result = run_sweep(
        tiny_net,
        [(x, y)],
        num_samples=len(y),
        num_classes=4,
        eps=eps,
        targeted_eps=eps,
        policy=TargetPolicy("next"),
        keep_directions=True,
    )
    targets = (y + 1) % 4
    for e in eps:
        ours = perturb(result.inputs, result.directions.float(), e)
        assert torch.equal(ours, torchattacks.FGSM(tiny_net, eps=e)(x, y))
        attack = torchattacks.FGSM(tiny_net, eps=e)
        attack.set_mode_targeted_by_function(lambda images, labels: targets)
        ours_targeted = perturb(result.inputs, result.targeted_directions.float(), e)
        assert torch.equal(ours_targeted, attack(x, y))
