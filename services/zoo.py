"""Demo architectures: small digit classifiers, one per convolution family of the architecture audit."""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(
    c_in: int,
    c_out: int,
    *,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    groups: int = 1,
) -> list[nn.Module]:
    conv = nn.Conv2d(
        c_in, c_out, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=False
    )
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class GapCNN(nn.Module):
    """Plain 3×3 CNN with a global-average-pool → Linear head (CAM-eligible)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, 16, kernel_size=3, padding=1),
            nn.MaxPool2d(2),
            *_conv_bn_relu(16, 32, kernel_size=3, padding=1),
            nn.MaxPool2d(2),
            *_conv_bn_relu(32, 64, kernel_size=3, padding=1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.pool(self.features(x)).flatten(1))
        return logits


def _separable(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    depthwise = _conv_bn_relu(c_in, c_in, kernel_size=3, stride=stride, padding=1, groups=c_in)
    pointwise = _conv_bn_relu(c_in, c_out, kernel_size=1)
    return depthwise + pointwise


class SeparableCNN(nn.Module):
    """MobileNet-style CNN: depthwise 3×3 + pointwise 1×1 blocks, GAP → Linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, 16, kernel_size=3, padding=1),
            *_separable(16, 32, stride=2),
            *_separable(32, 64, stride=2),
            *_separable(64, 64, stride=1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.pool(self.features(x)).flatten(1))
        return logits


class DilatedCNN(nn.Module):
    """CNN whose receptive field grows through dilated 3×3 convolutions; flatten → Linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, 16, kernel_size=3, padding=1),
            *_conv_bn_relu(16, 32, kernel_size=3, padding=2, dilation=2),
            nn.MaxPool2d(2),
            *_conv_bn_relu(32, 32, kernel_size=3, padding=4, dilation=4),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 8 * 8, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(x))
        return logits


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "gap-cnn": GapCNN,
    "separable-cnn": SeparableCNN,
    "dilated-cnn": DilatedCNN,
}
"""Our own architecture names, usable with `--arch` like torchvision's model names."""

DEMO_MODELS: tuple[str, ...] = tuple(ARCHITECTURES)
"""`demo:NAME` models: each architecture trained on the digits train split."""


def build_architecture(name: str, num_classes: int, in_channels: int = 1) -> nn.Module:
    """Instantiate one of our demo architectures by name."""
    return ARCHITECTURES[name](num_classes=num_classes, in_channels=in_channels)
