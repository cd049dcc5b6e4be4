"""One pass over the scanned samples: per depth and channel, the dataset mean and the top-activating patches.

A patch is a sample's spatial arg-max unit for the channel (the first such unit on ties), and a channel's
top patches are the samples with the largest such maxima, at most one per sample (a sample never fills a row
alone), ties broken by the lower sample index. The top-k lists are kept running per batch, so memory does
not grow with the number of samples.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from services.feature_taps import LayerTap
from services.feature_types import Box


@dataclass
class DepthScan:
    """What the pass found at one depth (CPU arrays)."""

    output_shape: tuple[int, int, int]  # (C, H, W)
    mean: np.ndarray  # (C,) mean over samples of the channel's spatial-mean activation
    max_mean: np.ndarray  # (C,) largest spatial-mean activation of any sample
    top_values: np.ndarray  # (C, k) the top spatial maxima, largest first
    top_samples: np.ndarray  # (C, k) their sample indices
    top_positions: np.ndarray  # (C, k) their flat unit indices y·W + x

    def most_active(self, count: int) -> list[int]:
        """The `count` channels of the largest dataset mean (the lower index first on ties)."""
        return [int(c) for c in np.argsort(-self.mean, kind="stable")[:count]]


class _Running:
    """Running sums and top-k lists of one depth, on the device."""

    def __init__(self, shape: torch.Size, k: int, device: torch.device) -> None:
        channels = shape[1]
        self.shape = (int(shape[1]), int(shape[2]), int(shape[3]))
        self.k = k
        self.sums = torch.zeros(channels, dtype=torch.float64, device=device)
        self.max_mean = torch.full((channels,), -torch.inf, device=device)
        self.values = torch.empty(channels, 0, device=device)
        self.samples = torch.empty(channels, 0, dtype=torch.int64, device=device)
        self.positions = torch.empty(channels, 0, dtype=torch.int64, device=device)

    def add(self, activation: torch.Tensor, first: int) -> None:
        a = activation.float()
        means = a.mean(dim=(2, 3))  # (B, C)
        self.sums += means.double().sum(0)
        self.max_mean = torch.maximum(self.max_mean, means.max(0).values)
        peak, where = a.flatten(2).max(dim=2)  # (B, C): first arg-max on ties
        batch = torch.arange(first, first + len(a), device=a.device).expand(a.shape[1], -1)
        values = torch.cat([self.values, peak.T], dim=1)
        # stable: among equal maxima the earlier (lower) sample stays first
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.values = values.gather(1, order)
        self.samples = torch.cat([self.samples, batch], dim=1).gather(1, order)
        self.positions = torch.cat([self.positions, where.T], dim=1).gather(1, order)

    def result(self, count: int) -> DepthScan:
        return DepthScan(
            output_shape=self.shape,
            mean=(self.sums / max(count, 1)).cpu().numpy(),
            max_mean=self.max_mean.double().cpu().numpy(),
            top_values=self.values.double().cpu().numpy(),
            top_samples=self.samples.cpu().numpy(),
            top_positions=self.positions.cpu().numpy(),
        )


def scan_dataset(
    model: torch.nn.Module,
    tap: LayerTap,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    patches: int,
) -> tuple[list[DepthScan], int]:
    """Every depth's scan over `batches` (in dataset order from sample 0), and the number of samples seen."""
    running: list[_Running] = []
    seen = 0
    with torch.inference_mode():
        for x, _ in batches:
            outputs = tap.run(model, x.to(device))
            if not running:
                running = [_Running(a.shape, patches, a.device) for a in outputs]
            for state, activation in zip(running, outputs, strict=True):
                state.add(activation, seen)
            seen += len(x)
    return [state.result(seen) for state in running], seen


def patch_box(
    y: int, x: int, map_hw: tuple[int, int], image_hw: tuple[int, int], field: tuple[int, int]
) -> Box:
    """The input box a unit (y, x) of a map sees: its receptive field centred on the unit's position scaled to
    the image (the unit's centre is exact for stride-1 layers, within half a stride otherwise), clipped at the
    image's borders."""
    box = []
    for position, size, image, extent in (
        (y, map_hw[0], image_hw[0], field[0]),
        (x, map_hw[1], image_hw[1], field[1]),
    ):
        centre = (position + 0.5) * image / size
        start = int(np.floor(centre - extent / 2 + 0.5))
        box.append((max(0, start), min(image, start + extent)))
    (top, bottom), (left, right) = box
    return top, left, bottom, right
