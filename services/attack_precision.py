"""The gradient steps of BIM and PGD in bf16: a cheaper direction, with every success decided by the model itself.

An iterative attack spends nearly all its time in forward+backward passes whose only use is the direction of
the next step (the sign of the gradient in L∞). Under bf16 autocast those passes cost about half as much on
a CPU with bf16 instructions (ResNet-18 at 3×32×32, batch 128, one thread: 2.3× here) and on CUDA. The
direction is then slightly different (the signs of about 6 % of a random-init ResNet-18's input gradient
differ), so the attack is a slightly different attack, not a weaker claim: whether a sample is fooled is
only ever decided by the model in the run's precision (services.iterative.gradient_attack; in a sweep, by
the forward of the FGSM sweep's ε passes, which predicts what the model does: services.inference_layout),
so every sample called fooled has an adversarial input the model itself misclassifies, and the sanity
checks judge the attack's strength as they judge any attack's.

On the CPU, a conv model's steps run on a channels_last copy (services.inference_layout), where bf16
convolutions are fastest; elsewhere on the model itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from services.errors import EvaluationCancelled
from services.inference_layout import as_channels_last, channels_last_copy
from services.iterative import StepForward


def bf16_steps(
    model: nn.Module,
    device: torch.device,
    should_stop: Callable[[], bool] | None,
    layout_copy: nn.Module | None = None,
) -> StepForward:
    """The forward the attacks' gradient steps differentiate: bf16 autocast, fp32 logits, on `layout_copy`
    (or a channels_last copy made here) where there is one, else on `model`."""
    network = layout_copy if layout_copy is not None else channels_last_copy(model, device)
    target = network if network is not None else model

    def forward(x: torch.Tensor) -> torch.Tensor:
        if should_stop is not None and should_stop():
            raise EvaluationCancelled("evaluation cancelled")
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            logits: torch.Tensor = target(x)
        return logits.float()

    return as_channels_last(forward) if network is not None else forward
