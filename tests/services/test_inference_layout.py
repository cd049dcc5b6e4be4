"""The forward-only passes on a channels_last copy: same outcomes, the copy really used, a safe fallback."""

from __future__ import annotations

import torch
from torch import nn

from services.attack_specs import AttackSpec, SanityProbe
from services.inference_layout import agrees, as_channels_last, channels_last_copy
from services.specs import TargetPolicy
from services.sweep import run_sweep
from tests.support.tiny import TinyConvNet, batches_of

EPS = (0.0, 0.02, 0.05, 0.1, 0.2)


class FlatViewNet(nn.Module):
    """A conv net that flattens with .view(): impossible on a channels_last activation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 4)

    def forward(self, x):
        features = torch.relu(self.conv(x))
        return self.fc(features.view(features.shape[0], -1))


class LayoutRecorder(nn.Module):
    """Wraps a model and records whether each input it saw was channels_last."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return self.inner(x)


def _data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return torch.rand(n, 1, 8, 8, generator=generator), torch.randint(0, 4, (n,), generator=generator)


def _sweep(model: nn.Module, layout: str, x: torch.Tensor, y: torch.Tensor):
    return run_sweep(
        model,
        batches_of(x, y, 16),
        num_samples=len(y),
        num_classes=4,
        eps=EPS,
        targeted_eps=EPS,
        policy=TargetPolicy.parse("next"),
        keep_directions=True,
        attacks=(AttackSpec("pgd", steps=3),),
        probe=SanityProbe(large_eps=0.5, noise=True),
        inference_layout=layout,
    )


def test_auto_layout_gives_the_outcomes_of_the_model_layout() -> None:
    torch.manual_seed(0)
    model, (x, y) = TinyConvNet(), _data()
    auto, own = _sweep(model, "auto", x, y), _sweep(model, "model", x, y)
    assert torch.equal(auto.directions, own.directions)  # the gradient passes are the model's own
    assert torch.equal(auto.targeted_directions, own.targeted_directions)
    assert torch.equal(auto.pred, own.pred) and torch.equal(auto.targeted_pred, own.targeted_pred)
    assert torch.allclose(auto.conf, own.conf, rtol=1e-5, atol=1e-6)
    assert torch.equal(auto.robust.counts.noise_robust, own.robust.counts.noise_robust)
    for spec in auto.robust.robust:
        assert torch.equal(auto.robust.robust[spec], own.robust.robust[spec])


def test_auto_layout_runs_the_epsilon_forwards_on_the_copy() -> None:
    torch.manual_seed(0)
    x, y = _data(16)
    recorder = LayoutRecorder(TinyConvNet())
    result = run_sweep(recorder, [(x, y)], num_samples=16, num_classes=4, eps=EPS, inference_layout="auto")
    # the model saw the gradient pass only; the copy records into its own list
    assert result.inference_layout == "channels_last" and recorder.seen == [False]
    recorder.seen.clear()
    own = run_sweep(recorder, [(x, y)], num_samples=16, num_classes=4, eps=EPS, inference_layout="model")
    assert own.inference_layout == "model" and recorder.seen == [False] * len(EPS)


def test_a_model_that_needs_its_own_layout_falls_back_to_it() -> None:
    torch.manual_seed(0)
    model, (x, y) = FlatViewNet(), _data()
    copy = channels_last_copy(model, torch.device("cpu"))
    assert copy is not None
    with torch.no_grad():
        logits = model(x)
    assert not agrees(as_channels_last(copy), x, logits)  # .view() of a channels_last map raises
    auto, own = _sweep(model, "auto", x, y), _sweep(model, "model", x, y)
    assert torch.equal(auto.pred, own.pred) and torch.equal(auto.conf, own.conf)


def test_agreement_needs_the_same_classes() -> None:
    x = torch.rand(6, 1, 8, 8)
    logits = torch.tensor([[2.0, 1.0, 0.0, 0.0]]).repeat(6, 1)
    swapped = logits[:, [1, 0, 2, 3]]
    assert agrees(lambda batch: logits.clone(), x, logits)
    assert not agrees(lambda batch: swapped, x, logits)
    assert not agrees(lambda batch: logits * 1.01, x, logits)  # the same classes, but not a rounding apart
    assert not agrees(lambda batch: logits[:, :3], x, logits)


def test_no_copy_where_it_would_not_pay() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    assert channels_last_copy(mlp, torch.device("cpu")) is None
    assert channels_last_copy(TinyConvNet(), torch.device("meta")) is None
    dilated = nn.Sequential(nn.Conv2d(1, 4, 3, dilation=2), nn.Flatten())
    assert channels_last_copy(dilated, torch.device("cpu")) is None  # slower in channels_last
