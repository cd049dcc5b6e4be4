"""The hooks walk of an eager module gives exactly torch.export's table, and export is traced only when it may not."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from services.architecture import ArchitectureAudit, audit_architecture
from services.checkpoints import NormalizedModel, load_model
from services.zoo import DEMO_MODELS

TORCHVISION = {  # name: (builder kwargs, input size); random init, no weights
    "resnet18": ({}, 32),
    "mobilenet_v3_small": ({}, 32),
    "squeezenet1_0": ({}, 48),
    "densenet121": ({}, 32),
    "efficientnet_b0": ({}, 32),
    "shufflenet_v2_x0_5": ({}, 32),
    "googlenet": ({"aux_logits": False, "init_weights": False}, 32),  # parallel branches, concat
    "mobilenet_v3_large": ({"dilated": True}, 64),  # DeepLab's backbone: dilated depthwise convs
}


def assert_identical(hooks: ArchitectureAudit, export: ArchitectureAudit) -> None:
    assert (hooks.method, export.method) == ("hooks", "torch.export")
    assert hooks.layers == export.layers  # every field of every ConvLayer
    assert hooks.totals == export.totals  # params, MACs, by kind, max receptive field
    assert hooks.cam_head == export.cam_head
    assert hooks.input_shape == export.input_shape
    assert hooks.last_spatial_conv() == export.last_spatial_conv()
    assert {**hooks.to_dict(), "method": None} == {**export.to_dict(), "method": None}


@pytest.mark.parametrize("name", DEMO_MODELS)
@pytest.mark.parametrize("normalised", [False, True])
def test_demo_models_hooks_equal_export(name, normalised):
    loaded = load_model(f"demo:{name}", input_shape=(1, 32, 32))
    network = NormalizedModel(loaded.network, (0.5,), (0.25,)) if normalised else loaded.network
    auto = audit_architecture(network, (1, 32, 32))
    assert_identical(auto, audit_architecture(network, (1, 32, 32), walker="torch.export"))
    assert auto.layers


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_models_hooks_equal_export(name):
    kwargs, size = TORCHVISION[name]
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs).eval()
    auto = audit_architecture(model, (3, size, size))
    assert_identical(auto, audit_architecture(model, (3, size, size), walker="torch.export"))
    if name == "mobilenet_v3_large":
        assert any(layer.dilation != (1, 1) for layer in auto.layers)


class Functional(nn.Module):
    """Convolutions and pools as function calls, a weight used twice, a no-op flatten and eval dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 3, 3, 3))
        self.mix = nn.Parameter(torch.randn(8, 8, 1, 1))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(F.conv2d(x, self.weight, padding=1))
        x = F.max_pool2d(x, 2)
        x = x + F.conv2d(x, self.mix)
        x = F.conv2d(x, self.mix, stride=2)
        x = F.dropout(x.mean((2, 3)).flatten(1), 0.2, training=False)
        return self.fc(x)


def test_functional_convs_and_pools_are_seen():
    torch.manual_seed(0)
    model = Functional().eval()
    auto = audit_architecture(model, (3, 16, 16))
    assert_identical(auto, audit_architecture(model, (3, 16, 16), walker="torch.export"))
    assert [layer.receptive_field for layer in auto.layers] == [(3, 3), (4, 4), (4, 4)]
    assert auto.totals["conv_params"] == 8 * 3 * 9 + 8 * 8  # the 1×1 weight counts once
    assert auto.cam_head is None  # no module outputs the pooled tensor


class Upsampled(nn.Module):
    """F.interpolate is outside the known ops: export decides."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.conv2(F.interpolate(self.conv1(x), scale_factor=2.0))


class PixelShuffled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.shuffle, self.conv2 = nn.Conv2d(3, 16, 3), nn.PixelShuffle(2), nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.conv2(self.shuffle(self.conv1(x)))


class TokenLinear(nn.Module):
    """A Linear over the last axis of a 4-d map (ConvNeXt's MLP): export walks one op, eager three."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.mlp, self.conv2 = nn.Conv2d(3, 4, 3), nn.Linear(12, 6), nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.conv2(self.mlp(self.conv1(x)))


class Matmul(nn.Module):
    """torch.matmul on features: export keeps aten.matmul, the eager forward records aten.mm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.proj = nn.Parameter(torch.randn(4, 5))

    def forward(self, x):
        return torch.matmul(self.conv(x).mean((2, 3)), self.proj)


class NoOpTo(nn.Module):
    """A no-op .to() between the pool and the classifier: export keeps an aten.to node, eager nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1).to(torch.float32))


@pytest.mark.parametrize(
    ("model", "hooks_differ"),
    [(Upsampled, False), (PixelShuffled, False), (TokenLinear, True), (Matmul, True), (NoOpTo, False)],
)
def test_export_decides_where_hooks_may_differ(model, hooks_differ):
    torch.manual_seed(0)
    network = model().eval()
    auto = audit_architecture(network, (3, 14, 14))
    assert auto.method == "torch.export"
    export = audit_architecture(network, (3, 14, 14), walker="torch.export")
    assert (auto.layers, auto.totals, auto.cam_head) == (export.layers, export.totals, export.cam_head)
    hooks = audit_architecture(network, (3, 14, 14), walker="hooks")
    # The rule is conservative: some of these the hooks would get right, two they do not (RF jump, linear MACs).
    differ = (hooks.layers, hooks.totals, hooks.cam_head) != (export.layers, export.totals, export.cam_head)
    assert differ == hooks_differ
