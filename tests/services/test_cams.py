"""CAM and Grad-CAM: definition, CAM == Grad-CAM on GAP heads, pytorch-grad-cam agreement, hook hygiene."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from services.cams import CAM, GradCAM, confidence_drop, pearson, top_region, top_region_iou
from services.errors import ConfigError
from services.zoo import GapCNN
from tests.support.env import require


def test_gradcam_matches_the_definition(tiny_net, tiny_batch):
    x, _ = tiny_batch
    classes = tiny_net(x).argmax(1)
    with GradCAM(tiny_net, tiny_net, "conv2") as cam:
        maps, logits = cam(x, classes)
    # Reference: capture A = conv2(x) explicitly and differentiate the raw logit w.r.t. it.
    a = tiny_net.conv2(torch.relu(tiny_net.conv1(x))).detach().requires_grad_(True)
    out = tiny_net.fc(tiny_net.pool(torch.relu(a)).flatten(1))
    (grads,) = torch.autograd.grad(out.gather(1, classes[:, None]).sum(), a)
    raw = torch.relu((grads.mean((2, 3), keepdim=True) * a).sum(1))
    up = nn.functional.interpolate(raw[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[
        :, 0
    ]
    lo = up.flatten(1).min(1).values[:, None, None]
    hi = up.flatten(1).max(1).values[:, None, None]
    expected = torch.where(hi > lo, (up - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(up))
    assert torch.allclose(maps, expected, atol=1e-6)
    assert torch.allclose(logits, tiny_net(x), atol=1e-6)
    assert maps.shape == (len(x), 10, 10) and maps.min() >= 0 and maps.max() <= 1


def test_cam_equals_gradcam_on_gap_linear_net():
    torch.manual_seed(3)
    net = GapCNN(num_classes=10).eval()
    x = torch.rand(8, 1, 32, 32)
    classes = torch.arange(8) % 10
    feature_layer = "features.10"  # the ReLU whose output feeds the global average pool
    with CAM(net, net, feature_layer, "classifier") as cam:
        cam_maps, _ = cam(x, classes)
    with GradCAM(net, net, feature_layer) as gradcam:
        grad_maps, _ = gradcam(x, classes)
    assert torch.allclose(cam_maps, grad_maps, atol=1e-5)


def test_batched_maps_equal_one_by_one(tiny_net, tiny_batch):
    x, _ = tiny_batch
    classes = torch.arange(len(x)) % 4
    with GradCAM(tiny_net, tiny_net, "conv1") as cam:
        batched, _ = cam(x, classes)
        single = torch.cat([cam(x[i : i + 1], classes[i : i + 1])[0] for i in range(len(x))])
    assert torch.allclose(batched, single, atol=1e-5)


def test_inplace_relu_after_the_layer_gives_the_same_maps(tiny_net, tiny_batch):
    x, _ = tiny_batch
    classes = tiny_net(x).argmax(1)
    plain = copy.deepcopy(tiny_net)
    plain.act1, plain.act2 = nn.ReLU(), nn.ReLU()
    with GradCAM(tiny_net, tiny_net, "conv2") as cam:
        inplace_maps, _ = cam(x, classes)
    with GradCAM(plain, plain, "conv2") as cam:
        plain_maps, _ = cam(x, classes)
    assert torch.equal(inplace_maps, plain_maps)


def test_hooks_are_released_even_on_error(tiny_net, tiny_batch):
    x, _ = tiny_batch
    with GradCAM(tiny_net, tiny_net, "conv2") as cam:
        assert len(tiny_net.conv2._forward_hooks) == 1
        cam(x, torch.zeros(len(x), dtype=torch.long))
    assert not tiny_net.conv2._forward_hooks
    with pytest.raises(RuntimeError), GradCAM(tiny_net, tiny_net, "conv2") as cam:
        cam(x.repeat(1, 2, 1, 1), torch.zeros(len(x), dtype=torch.long))  # 2 channels: the forward raises
    assert not tiny_net.conv2._forward_hooks


def test_unknown_layer_is_a_clear_error(tiny_net):
    with pytest.raises(ConfigError, match=r"no layer 'conv3'.*Did you mean: conv2"):
        GradCAM(tiny_net, tiny_net, "conv3")
    with pytest.raises(ConfigError, match="CAM needs a Linear classifier"):
        CAM(tiny_net, tiny_net, "act2", "conv2")


def test_agrees_with_pytorch_grad_cam():
    pytorch_grad_cam = require("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(5)
    net = GapCNN(num_classes=10).eval()
    for module in net.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    x = torch.rand(6, 1, 32, 32)
    classes = net(x).argmax(1)
    layer = "features.7"  # a conv layer with an 8×8 map
    with GradCAM(net, net, layer) as cam:
        ours, _ = cam(x, classes)
    reference = pytorch_grad_cam.GradCAM(model=net, target_layers=[net.get_submodule(layer)])
    theirs = reference(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    correlations = pearson(ours, torch.from_numpy(np.asarray(theirs)))
    assert correlations.min() >= 0.98


def test_drift_metrics():
    a = torch.zeros(1, 10, 10)
    a[0, :2] = 1.0  # top 20 % = first two rows
    b = torch.zeros(1, 10, 10)
    b[0, 1:3] = 1.0  # overlaps a on one row
    assert top_region(a).sum() == 20
    assert top_region_iou(a, b).item() == pytest.approx(10 / 30)
    assert pearson(a, a).item() == pytest.approx(1.0)
    assert pearson(a, 1 - a).item() == pytest.approx(-1.0)
    assert pearson(a, torch.zeros_like(a)).isnan().all()
    assert top_region_iou(torch.zeros_like(a), torch.zeros_like(a)).isnan().all()
    sparse = torch.zeros(1, 10, 10)
    sparse[0, 0, :5] = 1.0  # only 5 % of the map is non-zero: zeros never join the top region
    assert top_region(sparse).sum() == 5


def test_confidence_drop_keeps_only_the_top_region(tiny_net, tiny_batch):
    x, _ = tiny_batch
    classes = tiny_net(x).argmax(1)
    maps = torch.rand(len(x), 10, 10)
    drop = confidence_drop(tiny_net, x, maps, classes)
    keep = top_region(maps)[:, None].float()
    expected = (tiny_net(x).softmax(1) - tiny_net(x * keep).softmax(1)).gather(1, classes[:, None]).squeeze(1)
    assert torch.allclose(drop, expected, atol=1e-6)


def test_a_constant_map_stays_zero_instead_of_stretched_noise():
    from services.cams import _finish

    raw = torch.full((2, 3, 3), 0.7) + torch.tensor([0.0, 1e-9])[:, None, None]
    assert torch.equal(_finish(raw, (12, 12)), torch.zeros(2, 12, 12))


def test_a_one_by_one_layer_is_refused():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()
    with pytest.raises(ConfigError, match="1×1 map"), GradCAM(net, net, "0") as cam:
        cam(torch.rand(5, 1, 4, 4), torch.zeros(5, dtype=torch.long))


def test_extractors_freeze_parameters_and_restore_mode(tiny_net, tiny_batch):
    x, _ = tiny_batch
    tiny_net.train()
    with GradCAM(tiny_net, tiny_net, "conv2") as cam:
        assert not tiny_net.training and not any(p.requires_grad for p in tiny_net.parameters())
        cam(x, torch.zeros(len(x), dtype=torch.long))
    assert tiny_net.training and all(p.requires_grad for p in tiny_net.parameters())
