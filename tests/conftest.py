"""Shared fixtures: tiny seeded models and synthetic data; nothing is downloaded."""

from __future__ import annotations

import importlib
import os
import socket
from types import ModuleType

import pytest
import torch
from torch import nn


def in_ci() -> bool:
    """True when the `CI` environment variable is set (to anything but an empty/false-like value)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(module_name: str) -> ModuleType:
    """Import and return `module_name` for a cross-check test.

    Missing locally, the test is skipped; in CI (the `CI` environment variable is set, as `.ci/run` runs
    with CI=true) it fails instead, so a cross-check can never silently drop out of the pipeline.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        message = f"cross-check dependency {module_name!r} cannot be imported: {error}"
        if in_ci():
            pytest.fail(
                f"{message} (CI is set, so this is a failure, not a skip; run `make install`)", pytrace=False
            )
        pytest.skip(message)


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


@pytest.fixture
def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return TinyConvNet().eval()


@pytest.fixture
def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(24, 1, 10, 10, generator=generator)
    y = torch.randint(0, 4, (24,), generator=generator)
    return x, y


def batches_of(x: torch.Tensor, y: torch.Tensor, size: int):
    """Split tensors into (x, y) batches, as a Dataset would yield them."""
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def comparable_report(document: dict) -> dict:
    """A report.json document without what legitimately differs between runs of the same evaluation:
    timing, and the model/dataset `source` (a file path in-process, the registered name in the service)."""
    kept = {key: value for key, value in document.items() if key != "timing"}
    for part in ("model", "dataset"):
        kept[part] = {key: value for key, value in kept[part].items() if key != "source"}
    return kept


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
