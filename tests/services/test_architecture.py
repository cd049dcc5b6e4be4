"""Architecture audit: golden values computed by hand on tiny nets, the zoo models, resnet18 and every graph source."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from services.architecture import (
    ArchitectureAudit,
    CamHead,
    audit_architecture,
    conv_kind,
    conv_macs,
    conv_params,
    save_filter_grid,
)
from services.errors import ConfigError, ModelError
from services.zoo import build_architecture

ZOO = ("gap-cnn", "separable-cnn", "dilated-cnn")
DIGITS = (1, 32, 32)


def zoo_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_architecture(name, num_classes=10).eval()


def signature(audit: ArchitectureAudit) -> list[tuple]:
    return [
        (layer.name, layer.kind, layer.output_shape, layer.params, layer.macs, layer.receptive_field)
        for layer in audit.layers
    ]


# ---- cost formulas -------------------------------------------------------------------------------------------


def test_conv_params_by_hand():
    assert conv_params(3, 8, (3, 3)) == 8 * 3 * 3 * 3 + 8 == 224
    assert conv_params(16, 32, (3, 3), groups=4, bias=False) == 32 * (16 // 4) * 3 * 3 == 1152
    assert conv_params(16, 16, (3, 3), groups=16) == 16 * 1 * 9 + 16 == 160
    # transposed: the weight is stored as (C_in, C_out/g, kh, kw)
    assert conv_params(32, 8, (4, 4), transposed=True) == 32 * 8 * 16 + 8 == 4104
    assert conv_params(4, 6, (3, 3), groups=2, transposed=True) == 4 * (6 // 2) * 9 + 6 == 114


def test_conv_macs_by_hand():
    assert conv_macs(3, 8, (3, 3), 1, (16, 16), (16, 16)) == 16 * 16 * 8 * 3 * 9 == 55296
    # depthwise = H·W·C·k², pointwise = H·W·C_in·C_out: a separable block is their sum
    assert conv_macs(16, 16, (3, 3), 16, (16, 16), (8, 8)) == 8 * 8 * 16 * 9 == 9216
    assert conv_macs(16, 32, (1, 1), 1, (8, 8), (8, 8)) == 8 * 8 * 16 * 32 == 32768
    assert conv_macs(32, 8, (4, 4), 1, (8, 8), (16, 16), transposed=True) == 8 * 8 * 32 * 8 * 16 == 262144


def test_conv_kind_precedence():
    assert conv_kind(3, 1, (3, 3), (1, 1)) == "standard"
    assert conv_kind(8, 1, (1, 1), (1, 1)) == "pointwise"
    assert conv_kind(8, 8, (3, 3), (2, 2)) == "depthwise"  # dilated depthwise is depthwise
    assert conv_kind(8, 4, (1, 1), (1, 1)) == "grouped"  # grouped beats pointwise
    assert conv_kind(8, 1, (1, 1), (2, 2)) == "dilated"
    assert conv_kind(8, 8, (3, 3), (1, 1), transposed=True) == "transposed"
    assert conv_kind(1, 1, (3, 3), (1, 1)) == "standard"  # groups == in_channels == 1 is no depthwise conv


# ---- one conv of each kind -------------------------------------------------------------------------------------


def kinds_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 0 standard
        nn.ReLU(),
        nn.Conv2d(8, 16, 1),  # 2 pointwise
        nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16),  # 3 depthwise
        nn.Conv2d(16, 32, 3, padding=1, groups=4, bias=False),  # 4 grouped
        nn.Conv2d(32, 32, 3, padding=2, dilation=2),  # 5 dilated
        nn.ConvTranspose2d(32, 8, 4, stride=2, padding=1),  # 6 transposed
        nn.ReLU(),  # 7: feeds the pool
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()


def test_each_kind_by_hand():
    audit = audit_architecture(kinds_net(), (3, 16, 16))
    assert audit.method == "hooks"  # an eager module that torch.export would walk the same way
    expected = [
        # name, kind, output (C, H, W), params, MACs, receptive field
        ("0", "standard", (8, 16, 16), 8 * 3 * 9 + 8, 16 * 16 * 8 * 3 * 9, (3, 3)),
        ("2", "pointwise", (16, 16, 16), 16 * 8 + 16, 16 * 16 * 16 * 8, (3, 3)),
        # stride 2: RF 3 + 2·1 = 5, jump becomes 2
        ("3", "depthwise", (16, 8, 8), 16 * 9 + 16, 8 * 8 * 16 * 1 * 9, (5, 5)),
        ("4", "grouped", (32, 8, 8), 32 * 4 * 9, 8 * 8 * 32 * 4 * 9, (9, 9)),  # 5 + 2·2
        ("5", "dilated", (32, 8, 8), 32 * 32 * 9 + 32, 8 * 8 * 32 * 32 * 9, (17, 17)),  # 9 + 2·2·2
        # transposed: H_out = (8−1)·2 − 2·1 + (4−1) + 1 = 16; jump 2/2 = 1; RF 17 + 3·1 = 20
        ("6", "transposed", (8, 16, 16), 32 * 8 * 16 + 8, 8 * 8 * 32 * 8 * 16, (20, 20)),
    ]
    assert signature(audit) == expected
    assert audit.layers[2].groups == 16 and audit.layers[3].groups == 4
    assert audit.layers[4].dilation == (2, 2) and audit.layers[4].padding == (2, 2)
    assert audit.layers[5].stride == (2, 2) and audit.layers[5].kernel_size == (4, 4)
    totals = audit.totals
    assert totals["conv_layers"] == 6
    assert totals["by_kind"] == {
        kind: 1 for kind in ("standard", "pointwise", "depthwise", "grouped", "dilated", "transposed")
    }
    assert totals["conv_params"] == 224 + 144 + 160 + 1152 + 9248 + 4104
    assert totals["linear_macs"] == 8 * 5
    assert totals["conv_macs"] == 55296 + 32768 + 9216 + 73728 + 589824 + 262144
    assert totals["macs"] == totals["conv_macs"] + 40
    assert totals["params"] == totals["conv_params"] + 8 * 5 + 5
    assert totals["max_receptive_field"] == (20, 20)
    assert audit.cam_head == CamHead("7", "10")
    assert audit.last_spatial_conv() == "6"
    json.dumps(audit.to_dict())  # plain JSON types only


@pytest.mark.parametrize(
    ("layers", "receptive_field"),
    [
        ([nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3)], 5),  # 1 + 2 + 2
        ([nn.Conv2d(1, 1, 3), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3)], 8),  # 3, pool 3 + 1 = 4 (jump 2), 4 + 2·2
        ([nn.Conv2d(1, 1, 3, dilation=2)], 5),  # 1 + 2·2
        ([nn.Conv2d(1, 1, 3, stride=2), nn.AvgPool2d(3, stride=1), nn.Conv2d(1, 1, 1)], 7),  # 3, 3 + 2·2, +0
    ],
)
def test_receptive_field_by_hand(layers, receptive_field):
    audit = audit_architecture(nn.Sequential(*layers), (1, 24, 24))
    assert audit.layers[-1].receptive_field == (receptive_field, receptive_field)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
        self.head = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.branch(x))


def test_residual_add_takes_the_wider_field():
    audit = audit_architecture(Residual(), (1, 12, 12))
    # stem 3, branch 5 then 7; the add keeps max(3, 7) = 7 and a 1×1 conv adds nothing
    assert [layer.receptive_field[0] for layer in audit.layers] == [3, 5, 7, 7]


class EcaLike(nn.Module):
    """A Conv1d over the channel axis after global pooling (ECA attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.attention = nn.Conv1d(1, 1, 3, padding=1, bias=False)

    def forward(self, x):
        x = self.conv(x)
        weights = self.attention(x.mean((2, 3)).unsqueeze(1)).squeeze(1)
        return x * weights.sigmoid()[:, :, None, None]


def test_conv1d_is_reported_but_never_the_grad_cam_layer():
    audit = audit_architecture(EcaLike(), (1, 10, 10))
    attention = audit.layers[1]
    assert (attention.name, attention.spatial_dims, attention.kernel_size) == ("attention", 1, (1, 3))
    assert attention.output_shape == (1, 1, 8) and attention.macs == 8 * 1 * 1 * 3
    assert attention.receptive_field == (10, 10)  # after a global mean every unit sees the whole image
    assert audit.last_spatial_conv() == "conv"


# ---- zoo models and resnet18 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "by_kind", "cam_head", "last_conv"),
    [
        ("gap-cnn", {"standard": 3}, ("features.10", "classifier"), "features.8"),
        (
            "separable-cnn",
            {"standard": 1, "depthwise": 3, "pointwise": 3},
            ("features.20", "classifier"),
            "features.18",
        ),
        ("dilated-cnn", {"standard": 1, "dilated": 2}, None, "features.7"),  # flatten → Linear: no GAP head
    ],
)
def test_zoo_models(name, by_kind, cam_head, last_conv):
    model = zoo_model(name)
    audit = audit_architecture(model, DIGITS)
    assert {kind: n for kind, n in audit.totals["by_kind"].items() if n} == by_kind
    assert audit.totals["params"] == sum(p.numel() for p in model.parameters())
    assert audit.last_spatial_conv() == last_conv
    assert all(isinstance(model.get_submodule(layer.name), nn.Conv2d) for layer in audit.layers)
    if cam_head is None:
        assert audit.cam_head is None
        return
    assert audit.cam_head == CamHead(*cam_head)
    assert isinstance(model.get_submodule(audit.cam_head.classifier), nn.Linear)
    seen = {}
    feature = model.get_submodule(audit.cam_head.feature_layer)
    handles = [
        feature.register_forward_hook(lambda m, i, o: seen.__setitem__("feature", o.clone())),
        model.pool.register_forward_hook(lambda m, i, o: seen.__setitem__("pooled", i[0].clone())),
    ]
    with torch.no_grad():
        model(torch.rand(2, *DIGITS))
    for handle in handles:
        handle.remove()
    assert torch.equal(seen["feature"], seen["pooled"])


def test_separable_cnn_costs_by_hand():
    audit = audit_architecture(zoo_model("separable-cnn"), DIGITS)
    first, depthwise, pointwise = audit.layers[:3]
    assert first.macs == 32 * 32 * 16 * 1 * 9
    assert (depthwise.output_shape, depthwise.macs) == ((16, 16, 16), 16 * 16 * 16 * 9)
    assert (pointwise.output_shape, pointwise.macs) == ((32, 16, 16), 16 * 16 * 16 * 32)
    assert depthwise.params == 16 * 9 and pointwise.params == 16 * 32  # bias=False before BatchNorm
    # RF: 3, then depthwise stride 2 → 5 (jump 2), pointwise keeps 5, next depthwise 5 + 2·2 = 9 (jump 4)
    assert [layer.receptive_field[0] for layer in audit.layers] == [3, 5, 5, 9, 9, 17, 17]


def test_resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    audit = audit_architecture(model, (3, 32, 32))
    assert len(audit.layers) == 20 and audit.totals["conv_layers"] == 20
    assert audit.totals["params"] == sum(p.numel() for p in model.parameters())
    assert audit.totals["by_kind"]["pointwise"] == 3  # the three stride-2 downsample shortcuts
    assert audit.layers[0].output_shape == (64, 16, 16)
    assert audit.layers[-1].output_shape == (512, 1, 1)
    main_path = [layer.receptive_field[0] for layer in audit.layers if "downsample" not in layer.name]
    assert main_path == sorted(main_path) and main_path[0] == 7
    assert audit.totals["max_receptive_field"] == (435, 435)  # ResNet-18's well-known theoretical RF
    assert audit.cam_head is not None and audit.cam_head.classifier == "fc"
    # layer4.1.relu runs twice in a BasicBlock, so the block itself is the module whose output is pooled
    assert audit.cam_head.feature_layer == "layer4.1"
    model.get_submodule(audit.cam_head.feature_layer)
    assert audit.last_spatial_conv() == "layer3.1.conv2"  # layer4 maps are 1×1 at 32×32


# ---- other graph sources -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gap-cnn", "separable-cnn"])
def test_exported_archive_matches_the_plain_module(name, tmp_path):
    model = zoo_model(name)
    plain = audit_architecture(model, DIGITS)
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(1, *DIGITS),), strict=False), path)
    exported = torch.export.load(path)
    archived = audit_architecture(torch.export.unflatten(exported), DIGITS, exported=exported)
    assert archived.method == "torch.export"
    assert archived.layers == plain.layers and archived.cam_head == plain.cam_head
    assert archived.totals == plain.totals


def test_exported_at_another_size_reports_shapes_at_the_audited_size():
    model = zoo_model("gap-cnn")
    exported = torch.export.export(model, (torch.rand(1, 1, 28, 28),), strict=False)
    archived = audit_architecture(torch.export.unflatten(exported), DIGITS, exported=exported)
    assert archived.layers == audit_architecture(model, DIGITS).layers
    assert archived.layers[0].output_shape == (16, 32, 32)


def test_exported_that_cannot_run_at_the_size_is_a_model_error():
    model = zoo_model("dilated-cnn")  # flatten → Linear(32·8·8) fixes the input at 32×32
    exported = torch.export.export(model, (torch.rand(1, *DIGITS),), strict=False)
    with pytest.raises(ModelError, match="traced at input"):
        audit_architecture(torch.export.unflatten(exported), (1, 28, 28), exported=exported)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("compile_with", ["script", "trace"])
def test_torchscript_matches_the_plain_module(name, compile_with):
    model = zoo_model(name)
    compiled = (
        torch.jit.script(model)
        if compile_with == "script"
        else torch.jit.trace(model, torch.rand(1, *DIGITS))
    )
    plain, scripted = audit_architecture(model, DIGITS), audit_architecture(compiled, DIGITS)
    assert scripted.method == "torchscript"
    assert signature(scripted) == signature(plain)
    assert scripted.totals == plain.totals
    assert scripted.cam_head is None


class DataDependent(nn.Module):
    """torch.export cannot trace the branch on a tensor value."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.act1 = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2, self.act2 = nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(inplace=True)
        self.gap, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 3)

    def forward(self, x):
        x = self.act1(self.conv1(x))
        if x.abs().sum() >= 0:
            x = self.pool(x)
        return self.fc(self.gap(self.act2(self.conv2(x))).flatten(1))


def test_hooks_fallback_on_data_dependent_control_flow():
    model = DataDependent().eval()
    audit = audit_architecture(model, (1, 16, 16))
    assert audit.method == "hooks"
    assert signature(audit) == [
        ("conv1", "standard", (4, 16, 16), 4 * 9 + 4, 16 * 16 * 4 * 9, (3, 3)),
        ("conv2", "standard", (8, 8, 8), 8 * 4 * 9 + 8, 8 * 8 * 8 * 4 * 9, (8, 8)),  # 3, pool → 4, 4 + 2·2
    ]
    assert audit.totals["linear_macs"] == 8 * 3
    assert audit.cam_head == CamHead(
        "act2", "fc"
    )  # the in-place ReLU, not the conv that returned the same tensor
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


# ---- side effects, errors, filter grid ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["export", "hooks", "script"])
def test_audit_leaves_mode_and_requires_grad_unchanged(kind):
    model = {
        "export": lambda: zoo_model("gap-cnn"),
        "hooks": DataDependent,
        "script": lambda: torch.jit.script(zoo_model("gap-cnn")),
    }[kind]()
    model.train()
    if kind == "export":
        model.features[1].eval()  # a mixed state must come back mixed
    first = next(model.parameters())
    first.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    audit_architecture(model, (1, 16, 16))
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(
        torch.equal(state[k], v) for k, v in model.state_dict().items()
    )  # no BatchNorm statistics update


def test_bad_input_shape_is_a_config_error():
    with pytest.raises(ConfigError):
        audit_architecture(zoo_model("gap-cnn"), (32, 32))


def test_model_that_cannot_run_is_a_model_error():
    with pytest.raises(ModelError, match="forward failed"):
        audit_architecture(zoo_model("gap-cnn"), (3, 32, 32))  # the model expects one channel


def test_filter_grid_png(tmp_path):
    model = zoo_model("gap-cnn")
    audit = audit_architecture(model, DIGITS)
    path = tmp_path / "filters.png"
    save_filter_grid(model, audit.layers[0], path)
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.width >= 300 and image.height >= 200


def test_filter_grid_rgb_by_name_and_transposed(tmp_path):
    resnet = torchvision.models.resnet18(num_classes=10)
    save_filter_grid(resnet, "conv1", tmp_path / "rgb.png")
    transposed = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2))
    save_filter_grid(transposed, audit_architecture(transposed, (4, 5, 5)).layers[0], tmp_path / "t.png")
    for name in ("rgb.png", "t.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size[0] >= 300
    with pytest.raises(ConfigError):
        save_filter_grid(resnet, "bn1", tmp_path / "no.png")
