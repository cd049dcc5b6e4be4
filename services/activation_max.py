"""Activation maximisation: an input optimised to maximise one channel's mean activation, seeded and deterministic.

Gradient ascent in pixel space, every target channel an image of one batch (the model is in eval mode, so the
images do not interact): start from seeded uniform noise; at each step roll the batch by a seeded random
jitter, take an Adam step on the channel's spatial-mean activation, roll back; every few steps mix in a 3×3
binomial blur (a low-pass regulariser: without it the optimum is high-frequency noise); clamp to [0, 1].
Each image is the best of its iterates, and of two starts (the ascent on a ReLU network can wander off a good
optimum, or not find one from a given start). The noise
and the jitter come from a generator seeded with the evaluation's seed, on the CPU, so the same seed gives the
same images (on CUDA, cuDNN is asked for its deterministic algorithms while the optimisation runs).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from services.feature_taps import LayerTap

STEPS = 128
LEARNING_RATE = 0.05  # Adam's: about this many pixel units per step
BLUR_EVERY = 4
BLUR_WEIGHT = 0.5  # x ← (1 − w)·x + w·blur(x)
STARTS = 2  # noise starts per channel, optimised side by side; the better result is kept


def settings(seed: int, image_hw: tuple[int, int]) -> dict[str, Any]:
    """The optimisation's settings as the report records them."""
    return {
        "steps": STEPS,
        "optimiser": "adam",
        "learning_rate": LEARNING_RATE,
        "jitter": _jitter(image_hw),
        "blur_every": BLUR_EVERY,
        "blur_weight": BLUR_WEIGHT,
        "starts": STARTS,
        "seed": seed,
    }


def _jitter(image_hw: tuple[int, int]) -> int:
    """Up to this many pixels of random shift per step: 1 for 32-pixel images, 7 for 224."""
    return max(1, min(image_hw) // 32)


def _blur(x: torch.Tensor) -> torch.Tensor:
    kernel_1d = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=x.device)
    kernel = (kernel_1d[:, None] * kernel_1d[None, :]).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])


@contextmanager
def _deterministic_cudnn(device: torch.device) -> Iterator[None]:
    if device.type != "cuda":
        yield
        return
    previous = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous


def _objective(outputs: Sequence[torch.Tensor], targets: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Per image k: the spatial-mean activation of its target (depth, channel)."""
    return torch.stack([outputs[depth][k, channel].mean() for k, (depth, channel) in enumerate(targets)])


def maximise(
    model: torch.nn.Module,
    tap: LayerTap,
    targets: Sequence[tuple[int, int]],
    input_shape: tuple[int, int, int],
    seed: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (K, C, H, W) in [0, 1] maximising each target (index into tap's layers, channel), and the
    targets' final spatial-mean activations (K,). Parameters must be frozen (services.attacks.frozen_eval)."""
    if not targets:
        return np.empty((0, *input_shape), dtype=np.float32), np.empty(0)
    generator = torch.Generator().manual_seed(seed)
    count = len(targets)
    targets = [*targets] * STARTS  # image k + i·count is start i of target k
    shape = (len(targets), *input_shape)
    x = torch.rand(shape, generator=generator).to(device).requires_grad_(True)
    jitter = _jitter(input_shape[1:])
    shifts = torch.randint(-jitter, jitter + 1, (STEPS, 2), generator=generator).tolist()
    best = torch.full((len(targets),), -torch.inf, device=device)
    best_x = x.detach().clone()
    optimiser = torch.optim.Adam([x], lr=LEARNING_RATE)
    with _deterministic_cudnn(device), torch.enable_grad():
        for step, (dy, dx) in enumerate(shifts):
            values = _objective(tap.run(model, torch.roll(x, (dy, dx), dims=(2, 3))), targets)
            with torch.no_grad():  # keep the best iterate, by its value as measured (rolled)
                better = values > best
                best = torch.where(better, values, best)
                best_x[better] = x[better]
            optimiser.zero_grad()
            (-values.sum()).backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            with torch.no_grad():
                if step % BLUR_EVERY == BLUR_EVERY - 1:
                    x.mul_(1 - BLUR_WEIGHT).add_(BLUR_WEIGHT * _blur(x))
                x.clamp_(0, 1)
    with torch.inference_mode():
        final = _objective(tap.run(model, best_x), targets).view(STARTS, count)
    winner = final.argmax(dim=0)  # per target, the start that reached the higher activation
    images = best_x.view(STARTS, count, *input_shape)[winner, torch.arange(count, device=device)]
    return images.cpu().numpy().astype(np.float32), final.max(dim=0).values.double().cpu().numpy()
