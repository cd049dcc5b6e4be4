"""Features at depth: depth picking, top-activating patches against a direct computation, receptive-field
crops, activation maximisation (effect and determinism), depth under attack on hand-computable cases."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from services import activation_max
from services.architecture import audit_architecture
from services.attacks import frozen_eval
from services.cam_audit import AttackedSamples
from services.checkpoints import load_model
from services.datasets import load_dataset
from services.errors import ConfigError
from services.feature_depths import pick_depths
from services.feature_scan import patch_box
from services.feature_sheets import depth_sheet
from services.feature_taps import LayerTap
from services.features import activation_shift, compute_features, depth_shift, feature_plan
from services.specs import EvaluationConfig

DIGITS = (1, 32, 32)
SCANNED = 100


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def gap():
    return load_model("demo:gap-cnn", input_shape=DIGITS)


def _depths(loaded, chosen=()):
    audit = audit_architecture(loaded.network, DIGITS, exported=loaded.exported)
    return pick_depths(loaded.named_module, loaded.network, audit, DIGITS, chosen)


@pytest.fixture(scope="module")
def gap_features(gap, digits):
    config = EvaluationConfig(feature_samples=SCANNED, batch_size=16, feature_channels=3)
    depths = _depths(gap)
    with frozen_eval(gap.named_module):
        return compute_features(gap, digits, depths, config, len(digits), None, torch.device("cpu"))


# ---- depths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "layers", "convs"),
    [
        # conv → BN → ReLU runs are followed to the ReLU; the last stage's ReLU output is what `features` returns
        ("gap-cnn", ["features.2", "features.6", "features"], ["features.0", "features.4", "features.8"]),
        (
            "separable-cnn",
            ["features.2", "features.8", "features"],
            ["features.0", "features.6", "features.18"],
        ),
        # two resolutions only: the first, middle and last convolution
        (
            "dilated-cnn",
            ["features.2", "features.5", "features.9"],
            ["features.0", "features.3", "features.7"],
        ),
    ],
)
def test_demo_models_get_low_mid_and_high_stages(name, layers, convs):
    depths = _depths(load_model(f"demo:{name}", input_shape=DIGITS))
    assert [d.role for d in depths] == ["low", "mid", "high"]
    assert [d.layer for d in depths] == layers and [d.conv for d in depths] == convs
    fields = [d.receptive_field[0] for d in depths]
    assert fields == sorted(fields) and fields[0] == 3


def test_resnet_depths_are_its_stem_and_stage_outputs():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    audit = audit_architecture(model, (3, 64, 64))
    depths = pick_depths(model, model, audit, (3, 64, 64))
    # the stem's ReLU (after conv1 → bn1), then whole stages: a block's output is its stage's output
    assert [d.layer for d in depths] == ["relu", "layer2", "layer4"]
    assert depths[0].receptive_field == (7, 7)
    by_name = {layer.name: layer.receptive_field for layer in audit.layers}
    assert depths[1].receptive_field == by_name["layer2.1.conv2"]
    for depth in depths:
        model.get_submodule(depth.layer)


def test_vgg_like_sequential_stages():
    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]

    features = nn.Sequential(
        *block(3, 8),
        *block(8, 8),
        nn.MaxPool2d(2),
        *block(8, 16),
        nn.MaxPool2d(2),
        *block(16, 16),
        *block(16, 32),
    )
    model = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5)).eval()
    audit = audit_architecture(model, (3, 32, 32))
    depths = pick_depths(model, model, audit, (3, 32, 32))
    # stage ends: the ReLU after the stage's last conv; the last one is what `features` (module "0") returns
    assert [d.layer for d in depths] == ["0.3", "0.6", "0"]
    assert [d.conv for d in depths] == ["0.2", "0.5", "0.10"]


def test_torch_export_archive_is_looked_at_through_its_named_view(tmp_path, digits):
    eager = load_model("demo:gap-cnn", input_shape=DIGITS).network
    path = tmp_path / "gap.pt2"
    program = torch.export.export(
        eager, (torch.rand(2, *DIGITS),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, path)
    loaded = load_model(path, input_shape=DIGITS)
    depths = _depths(loaded)
    assert [d.role for d in depths] == ["low", "mid", "high"]
    assert [d.conv for d in depths] == ["features.0", "features.4", "features.8"]
    config = EvaluationConfig(feature_samples=32, batch_size=16, feature_channels=2)
    with frozen_eval(loaded.named_module):
        features = compute_features(loaded, digits, depths, config, len(digits), None, torch.device("cpu"))
    assert [len(d.channels) for d in features.depths] == [2, 2, 2]


def test_torchscript_skips_auto_features_and_refuses_chosen_layers(tmp_path):
    eager = load_model("demo:gap-cnn", input_shape=DIGITS).network
    path = tmp_path / "gap.ts"
    torch.jit.save(torch.jit.script(eager), path)
    loaded = load_model(path, input_shape=DIGITS)
    audit = audit_architecture(loaded.network, DIGITS)
    warnings: list[str] = []
    assert feature_plan(loaded, audit, EvaluationConfig(), warnings) is None
    assert "TorchScript" in warnings[0]
    with pytest.raises(ConfigError, match="TorchScript"):
        feature_plan(loaded, audit, EvaluationConfig(feature_layers="features.2"), [])


def test_chosen_layers_are_resolved_and_checked(gap):
    depths = _depths(gap, ("features.3", "features.6"))
    assert [(d.role, d.layer) for d in depths] == [("layer 1", "features.3"), ("layer 2", "features.6")]
    assert depths[0].conv == "features.0" and depths[0].receptive_field == (3, 3)  # the conv before the pool
    with pytest.raises(ConfigError, match="no layer 'features.99'"):
        _depths(gap, ("features.99",))
    with pytest.raises(ConfigError, match=r"does not output an \(N, C, H, W\) map"):
        _depths(gap, ("classifier",))
    resnet = torchvision.models.resnet18(num_classes=10).eval()
    audit = audit_architecture(resnet, (3, 32, 32))
    with pytest.raises(ConfigError, match="runs 2 times per forward"):
        pick_depths(resnet, resnet, audit, (3, 32, 32), ("layer1.0.relu",))


def test_feature_layer_option_is_parsed_once():
    assert EvaluationConfig(feature_layers=" features.2 , layer3,").feature_layers == "features.2,layer3"
    with pytest.raises(ConfigError, match="repeats a layer"):
        EvaluationConfig(feature_layers="a,a")
    with pytest.raises(ConfigError, match="features none"):
        EvaluationConfig(features="none", feature_layers="a")
    with pytest.raises(ConfigError, match="unknown features"):
        EvaluationConfig(features="all")


# ---- top-activating patches ---------------------------------------------------------------------------------


def _direct_activations(loaded, digits, layer):
    """The layer's whole map for the scanned samples, from a plain forward hook (batches as the scan's, so
    every float is the one the scan saw)."""
    captured = []
    handle = loaded.network.get_submodule(layer).register_forward_hook(
        lambda m, i, o: captured.append(o.clone())
    )
    try:
        with torch.no_grad():
            for x, _ in digits.batches(16, limit=SCANNED):
                loaded.named_module(x)
    finally:
        handle.remove()
    return torch.cat(captured).double()


def test_patches_are_the_arg_max_activations(gap, digits, gap_features):
    for depth in gap_features.depths:
        a = _direct_activations(gap, digits, depth.depth.layer)
        means = a.mean(dim=(2, 3)).mean(0)
        expected_channels = torch.argsort(-means, stable=True)[:3].tolist()
        assert [c.channel for c in depth.channels] == expected_channels
        width = a.shape[3]
        for channel in depth.channels:
            assert channel.dataset_mean == pytest.approx(float(means[channel.channel]), rel=1e-5)
            peak, where = a[:, channel.channel].flatten(1).max(1)
            order = torch.argsort(-peak, stable=True)[:8]
            assert [p.sample for p in channel.patches] == order.tolist()
            np.testing.assert_allclose(
                [p.activation for p in channel.patches], peak[order].numpy(), rtol=1e-5
            )
            assert [(p.y, p.x) for p in channel.patches] == [divmod(int(where[i]), width) for i in order]
            # every patch is a true maximum: no unit of any scanned sample beats the last one kept
            assert float(a[:, channel.channel].max()) == pytest.approx(
                channel.patches[0].activation, rel=1e-5
            )


def test_patches_are_cropped_to_the_receptive_field(digits, gap_features):
    x, _ = digits.take(range(SCANNED))
    for depth in gap_features.depths:
        _, height, width = depth.output_shape
        field = depth.depth.receptive_field
        for channel in depth.channels:
            for patch, crop in zip(channel.patches, channel.crops, strict=True):
                top, left, bottom, right = patch.box
                assert patch_box(patch.y, patch.x, (height, width), (32, 32), field) == patch.box
                assert 0 <= top < bottom <= 32 and 0 <= left < right <= 32
                assert bottom - top <= field[0] and right - left <= field[1]
                np.testing.assert_array_equal(crop, x[patch.sample, :, top:bottom, left:right].numpy())


def test_patch_boxes_by_hand():
    # stride 1, 3×3 field: unit (5, 7) sees pixels 4…6 × 6…8; the corner unit is clipped at the border
    assert patch_box(5, 7, (32, 32), (32, 32), (3, 3)) == (4, 6, 7, 9)
    assert patch_box(0, 0, (32, 32), (32, 32), (3, 3)) == (0, 0, 2, 2)
    assert patch_box(31, 31, (32, 32), (32, 32), (3, 3)) == (30, 30, 32, 32)
    # stride 4 (an 8×8 map of a 32×32 image): unit (2, 3) is centred on pixel (10, 14)
    assert patch_box(2, 3, (8, 8), (32, 32), (9, 9)) == (6, 10, 15, 19)
    # a field larger than the image is the whole image
    assert patch_box(4, 4, (8, 8), (32, 32), (60, 60)) == (0, 0, 32, 32)


# ---- activation maximisation --------------------------------------------------------------------------------


def test_activation_maximisation_raises_the_channel_far_above_its_dataset_mean(gap_features):
    for depth in gap_features.depths:
        ratios = []
        for channel in depth.channels:
            assert channel.actmax_image is not None and channel.actmax_activation is not None
            assert channel.actmax_image.shape == DIGITS
            assert channel.actmax_image.min() >= 0 and channel.actmax_image.max() <= 1
            assert channel.actmax_activation > 1.2 * channel.dataset_mean  # every channel: above its mean
            ratios.append(channel.actmax_activation / channel.dataset_mean)
        # typically far above it, and above the best scanned image's mean activation too
        assert np.median(ratios) > 2
        best = max(depth.channels, key=lambda channel: channel.actmax_activation / channel.dataset_max_mean)
        assert best.actmax_activation > 1.5 * best.dataset_max_mean


def _maximised(loaded, seed):
    depths = _depths(loaded)
    with frozen_eval(loaded.named_module), LayerTap(loaded.network, [d.layer for d in depths]) as tap:
        return activation_max.maximise(
            loaded.named_module, tap, [(0, 1), (2, 5)], DIGITS, seed, torch.device("cpu")
        )


def test_activation_maximisation_is_seeded_and_deterministic(gap, gap_features, tmp_path):
    first, first_values = _maximised(gap, seed=11)
    again, again_values = _maximised(gap, seed=11)
    other, _ = _maximised(gap, seed=12)
    assert first.tobytes() == again.tobytes() and first_values.tobytes() == again_values.tobytes()
    assert not np.array_equal(first, other)
    depth = gap_features.depths[0]
    digests = []
    for name in ("a.png", "b.png"):
        depth_sheet(depth, "note", tmp_path / name)
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]


# ---- depth under attack -------------------------------------------------------------------------------------


def test_activation_shift_by_hand():
    a = torch.arange(1, 25, dtype=torch.float32).reshape(2, 3, 2, 2)
    change, cosine = activation_shift(a, a.clone())
    np.testing.assert_allclose(change, [0, 0]) and np.testing.assert_allclose(cosine, [1, 1])
    change, cosine = activation_shift(a, 2 * a)  # ‖2a − a‖ / ‖a‖ = 1, same direction
    np.testing.assert_allclose(change, [1, 1]) and np.testing.assert_allclose(cosine, [1, 1])
    change, cosine = activation_shift(a, -a)
    np.testing.assert_allclose(change, [2, 2]) and np.testing.assert_allclose(cosine, [-1, -1])
    # orthogonal channel means: channel 0 only vs channel 1 only
    e0, e1 = torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1)
    e0[0, 0], e1[0, 1] = 3.0, 4.0
    change, cosine = activation_shift(e0, e1)
    np.testing.assert_allclose(change, [5 / 3]) and np.testing.assert_allclose(cosine, [0])
    change, cosine = activation_shift(torch.zeros(1, 2, 1, 1), e1)
    assert np.isnan(change).all() and np.isnan(cosine).all()


def _samples(images, adversarial):
    n = len(images)
    zeros = np.zeros(n, dtype=np.int64)
    return AttackedSamples(
        8 / 255,
        np.arange(n),
        zeros,
        images,
        images,
        adversarial,
        zeros,
        zeros.astype(float),
        zeros,
        zeros.astype(float),
    )


def test_depth_shift_is_zero_for_an_unchanged_input_and_grows_with_the_attack(gap, digits):
    depths = _depths(gap)
    x, _ = digits.take(range(12))
    images = x.numpy()
    noisy = np.clip(images + 0.1 * np.sign(np.random.default_rng(0).standard_normal(images.shape)), 0, 1)
    with frozen_eval(gap.named_module), LayerTap(gap.network, [d.layer for d in depths]) as tap:
        same = depth_shift(gap.named_module, tap, _samples(images, images.copy()), 5, torch.device("cpu"))
        moved = depth_shift(
            gap.named_module, tap, _samples(images, noisy.astype(np.float32)), 5, torch.device("cpu")
        )
    for shift in same:
        assert shift.relative_l2_change == 0 and shift.channel_cosine == pytest.approx(1.0)
        assert shift.num_samples == 12
    assert all(shift.relative_l2_change > 0.05 for shift in moved)
    assert all(shift.channel_cosine < 1 for shift in moved)
