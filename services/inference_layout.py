"""Forward-only passes in the memory layout the CPU runs fastest: a channels_last copy of a conv model.

On the CPU, oneDNN's convolutions run about twice as fast on channels_last tensors (ResNet-18 at 3×32×32:
2.1× per forward here). The gradient passes keep the model's own layout, so the adversarial inputs stay
exactly the model's; only the passes that read predictions (the ε forwards of the FGSM sweep, the noise
probe) use the copy, and only once it has predicted what the model predicts on the run's first batch.
Models with dilated convolutions keep their layout: those run slower in channels_last (measured here).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from services.errors import EvaluationCancelled

Forward = Callable[[torch.Tensor], torch.Tensor]

# Agreement with the model: the same class for every sample, and logits equal up to float32 rounding of a
# differently ordered sum (seen here: at most 5e-7 on a ResNet-18).
RELATIVE_TOLERANCE = 1e-4


def channels_last_copy(model: nn.Module, device: torch.device) -> nn.Module | None:
    """A channels_last copy of an eager conv model on the CPU; None where it would not pay or cannot be made."""
    if device.type != "cpu" or isinstance(model, torch.jit.ScriptModule):
        return None
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convs or any(max(conv.dilation) > 1 for conv in convs):
        return None
    try:
        duplicate = copy.deepcopy(model)
        return duplicate.to(memory_format=torch.channels_last)
    except Exception:  # an exotic module that refuses deep copies or the layout: keep the model's own
        return None


def agrees(forward: Forward, x: torch.Tensor, logits: torch.Tensor) -> bool:
    """Whether `forward` gives the model's `logits` for the clean batch `x` (same classes, rounding apart)."""
    try:
        with torch.inference_mode():
            candidate = forward(x)
    except EvaluationCancelled:
        raise
    except Exception:  # e.g. a .view() of a channels_last activation: the model needs its own layout
        return False
    if candidate.shape != logits.shape or not torch.isfinite(candidate).all():
        return False
    scale = float(logits.abs().max().clamp(min=1.0))
    return bool(
        torch.equal(candidate.argmax(dim=1), logits.argmax(dim=1))
        and torch.allclose(candidate, logits, rtol=RELATIVE_TOLERANCE, atol=RELATIVE_TOLERANCE * scale)
    )


def as_channels_last(forward: Forward) -> Forward:
    """`forward` fed channels_last inputs (a contiguous input would make the copy convert at every layer)."""
    return lambda x: forward(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)


class LayoutChoice:
    """The forward of the passes that only read predictions: the model's own, or its channels_last copy.

    `start` checks the copy against the model on the first clean batch. The choice depends on nothing else
    (no timing), so a job split into shards of whole batches gets the same numbers as the job in one piece.
    """

    def __init__(self, own: Forward, copy: Forward | None) -> None:
        self.own, self.copy = own, copy
        self.chosen: Forward = own
        self._started = copy is None

    @property
    def layout(self) -> str:
        """What the passes ran on: "channels_last" or "model"."""
        return "channels_last" if self.chosen is self.copy else "model"

    def start(self, x: torch.Tensor, logits: torch.Tensor) -> None:
        """Called with the first clean batch and the model's logits for it (from the gradient pass)."""
        if not self._started and self.copy is not None and agrees(self.copy, x, logits):
            self.chosen = self.copy
        self._started = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.chosen(x)
