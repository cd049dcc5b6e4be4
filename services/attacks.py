"""FGSM directions and perturbations: one gradient at the clean input serves every ε."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode with parameters excluded from autograd; both restored afterwards."""
    modes = [
        (m, m.training) for m in model.modules()
    ]  # per module: a mixed train/eval model comes back as it was
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, training in modes:
            m.training = training


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast for `precision == "bf16"`, a no-op otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fgsm_directions(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targets_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One forward (and one backward per attack mode) at the clean input.

    Returns (clean_logits, untargeted direction, targeted direction or None, targets or None).
    A direction is what ε multiplies: sign(∇x CE(f(x), y)) untargeted, −sign(∇x CE(f(x), t)) targeted.
    `targets_fn(clean_logits) -> targets` lets policies such as least-likely use the same forward.
    """
    x = x.detach().requires_grad_(True)
    with autocast_for(x.device, precision):
        logits = model(x)
    # The loss is accumulated in fp32 even under bf16 autocast, so the gradient's sign is stable.
    logits = logits.float()
    # Mean reduction, as torchattacks does: the sign of a gradient sum can depend on its scaling.
    loss = F.cross_entropy(logits, labels)
    targets = targets_fn(logits.detach()) if targets_fn is not None else None
    (grad,) = torch.autograd.grad(loss, x, retain_graph=targets is not None)
    targeted_direction = None
    if targets is not None:
        (grad_t,) = torch.autograd.grad(F.cross_entropy(logits, targets), x)
        targeted_direction = -grad_t.sign()
    return logits.detach(), grad.sign(), targeted_direction, targets


def perturb(x: torch.Tensor, direction: torch.Tensor, eps: float) -> torch.Tensor:
    """x' = clamp(x + ε·direction, 0, 1): the FGSM step for a precomputed direction."""
    return torch.clamp(x + eps * direction, min=0, max=1)
