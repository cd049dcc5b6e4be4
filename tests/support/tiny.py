"""A tiny seeded conv net and batching for the engine tests (the root conftest's `tiny_net` and `tiny_batch`)."""

from __future__ import annotations

import torch
from torch import nn


class TinyConvNet(nn.Module):
    """Two convs (the second followed by an in-place ReLU) and a GAP → Linear head."""

    def __init__(self, in_channels: int = 1, num_classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.act2 = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.act2(self.conv2(self.act1(self.conv1(x))))).flatten(1))


def batches_of(x: torch.Tensor, y: torch.Tensor, size: int):
    """Split tensors into (x, y) batches, as a Dataset would yield them."""
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]
