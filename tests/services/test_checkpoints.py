"""Checkpoint loading: every format round-trips, every bad or hostile file is refused with a clear message."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torchvision
from torch import nn

from services import checkpoint_formats, checkpoints
from services.checkpoints import NormalizedModel, list_architectures, load_model
from services.errors import CheckpointError
from services.zoo import GapCNN, build_architecture

SHAPE = (1, 16, 16)
BATCH_DIM = ({0: torch.export.Dim("batch")},)


class Payload:
    """Unpickling this creates `marker`: proof that a loader ran attacker-controlled pickle code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class TupleNet(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :4], x.mean()


class DictNet(nn.Module):
    def forward(self, x):
        return {"logits": x.flatten(1)[:, :4]}


class NanNet(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :4] * float("nan")


class FixedBatchNet(nn.Module):
    def forward(self, x):
        return x.reshape(2, -1)[:, :4]


def _gap(num_classes: int = 10, in_channels: int = 1) -> GapCNN:
    """A GapCNN with non-trivial BatchNorm statistics, so a lost buffer would change the outputs."""
    torch.manual_seed(0)
    model = GapCNN(num_classes, in_channels)
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.uniform_(-0.5, 0.5)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
    return model.eval()


def _inputs(shape=SHAPE, n: int = 3) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(1))


def _load_error(path, **kwargs) -> str:
    kwargs.setdefault("input_shape", SHAPE)
    with pytest.raises(CheckpointError) as caught:
        load_model(path, **kwargs)
    return str(caught.value)


def _script(model: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(model), str(path))
    return path


def _rewrite_zip(src: Path, dst: Path, replace: dict | None = None, add: dict | None = None) -> Path:
    """Copy a zip, replacing entries whose name ends with a key (bytes or bytes → bytes) and adding entries."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for info in zin.infolist():
            data = zin.read(info.filename)
            for suffix, new in (replace or {}).items():
                if info.filename.endswith(suffix):
                    data = new(data) if callable(new) else new
            zout.writestr(info, data)
        for name, data in (add or {}).items():
            zout.writestr(f"{root}/{name}", data)
    return dst


@pytest.fixture(scope="module")
def exported_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "gap.pt2"
    torch.export.save(torch.export.export(_gap(), (_inputs(n=2),), dynamic_shapes=BATCH_DIM), path)
    return path


# --- round trips -------------------------------------------------------------------------------------------


def test_torch_export_round_trip_with_hooks(exported_file):
    loaded = load_model(exported_file, input_shape=SHAPE)
    x = _inputs()
    torch.testing.assert_close(loaded.module(x), _gap()(x))
    assert loaded.info.format == "torch.export" and loaded.info.num_classes == 10
    assert loaded.info.sha256 == hashlib.sha256(exported_file.read_bytes()).hexdigest()
    assert isinstance(loaded.exported, torch.export.ExportedProgram) and loaded.supports_hooks
    assert not loaded.network.training and all(p.requires_grad for p in loaded.network.parameters())
    seen = []
    loaded.network.get_submodule("features.2").register_forward_hook(lambda m, i, o: seen.append(o.shape))
    loaded.module(x)  # the fast flat graph the attacks run: the named layers' hooks do not fire there …
    assert seen == []
    torch.testing.assert_close(loaded.named_module(x), _gap()(x))  # … but do through the named view
    assert seen == [torch.Size([3, 16, 16, 16])]
    # one copy of the weights: the named view's parameters and buffers are the fast module's own
    fast = {name.removeprefix("graph."): t.data_ptr() for name, t in loaded.module.state_dict().items()}
    named = {name: t.data_ptr() for name, t in loaded.network.state_dict().items()}
    assert named and all(fast[name] == pointer for name, pointer in named.items())


@pytest.mark.parametrize("name", ["model.pt", "model.ts", "model.torchscript", "model"])
def test_torchscript_round_trip_any_extension(tmp_path, name):
    path = _script(_gap(), tmp_path / name)
    loaded = load_model(path, input_shape=SHAPE)
    x = _inputs()
    torch.testing.assert_close(loaded.module(x), _gap()(x))
    assert loaded.info.format == "torchscript" and loaded.info.arch is None
    assert not loaded.supports_hooks and not loaded.network.training


def test_state_dict_torchvision_wrapped_with_ddp_prefix(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    path = tmp_path / "resnet.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = load_model(path, input_shape=(3, 32, 32), arch="resnet18")
    x = _inputs((3, 32, 32), 2)
    torch.testing.assert_close(loaded.module(x), model(x))
    assert (loaded.info.format, loaded.info.arch, loaded.info.num_classes) == ("state_dict", "resnet18", 10)
    seen = []
    loaded.network.get_submodule("layer4").register_forward_hook(lambda m, i, o: seen.append(o.shape))
    loaded.module(x)
    assert seen == [torch.Size([2, 512, 1, 1])] and not loaded.network.training


def test_safetensors_round_trip(tmp_path):
    path = tmp_path / "gap.safetensors"
    safetensors.torch.save_file(_gap().state_dict(), str(path))
    loaded = load_model(path, input_shape=SHAPE, arch="gap-cnn")
    x = _inputs()
    torch.testing.assert_close(loaded.module(x), _gap()(x))
    assert loaded.info.format == "safetensors" and isinstance(loaded.network, GapCNN)


def test_demo_model_rebuilds_python_architecture(tmp_path, monkeypatch):
    torch.manual_seed(0)
    original = build_architecture("gap-cnn", 10).eval()
    path = _script(original, tmp_path / "gap-cnn.pt")
    monkeypatch.setattr(checkpoints, "demo_model_path", lambda name: tmp_path / f"{name}.pt")
    loaded = load_model("demo:gap-cnn", input_shape=SHAPE)
    x = _inputs()
    torch.testing.assert_close(loaded.module(x), original(x))
    assert isinstance(loaded.network, GapCNN) and loaded.supports_hooks
    assert (loaded.info.format, loaded.info.arch, loaded.info.source) == ("demo", "gap-cnn", "demo:gap-cnn")
    assert loaded.info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    seen = []
    loaded.network.get_submodule("features.8").register_forward_hook(lambda m, i, o: seen.append(o.shape))
    loaded.module(x)
    assert seen == [torch.Size([3, 64, 4, 4])]
    json.dumps(loaded.info.to_dict())


def test_demo_errors(tmp_path, monkeypatch):
    assert "demo:gap-cnn" in _load_error("demo:nope")
    monkeypatch.setattr(checkpoints, "demo_model_path", lambda name: tmp_path / f"{name}.pt")
    assert "is missing" in _load_error("demo:gap-cnn")


def test_mean_std_wrapper_matches_manual_normalisation(exported_file):
    loaded = load_model(exported_file, input_shape=SHAPE, mean=[0.3], std=[0.2])
    x = _inputs()
    assert isinstance(loaded.module, NormalizedModel) and isinstance(loaded.named_module, NormalizedModel)
    assert loaded.named_module.network is loaded.network  # the named view normalises too (CAMs run it)
    torch.testing.assert_close(loaded.module(x), _gap()((x - 0.3) / 0.2))
    torch.testing.assert_close(loaded.named_module(x), _gap()((x - 0.3) / 0.2))
    assert loaded.info.to_dict()["mean"] == [0.3] and loaded.info.std == (0.2,)


@pytest.mark.parametrize(
    ("mean", "std", "message"),
    [
        ([0.5, 0.5], [0.2], "mean has 2 values but the input has 1 channels"),
        ([0.5], [0.0], "std values must be > 0"),
        ([0.5], None, "give both mean and std"),
    ],
)
def test_bad_mean_std(exported_file, mean, std, message):
    assert message in _load_error(exported_file, mean=mean, std=std)


def test_list_architectures():
    names = list_architectures()
    assert {"gap-cnn", "dilated-cnn", "resnet18", "mobilenet_v3_small"} <= set(names)
    assert "fasterrcnn_resnet50_fpn" not in names


# --- hostile files ----------------------------------------------------------------------------------------


def _raw_pickle(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker), protocol=2)


def _torch_saved(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.ones(2), "hook": Payload(marker)}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".pt2", ".ts", ".safetensors", ""])
@pytest.mark.parametrize("make", [_raw_pickle, _torch_saved])
def test_pickle_payload_refused_for_every_extension(tmp_path, suffix, make):
    marker = tmp_path / "pwned"
    path = tmp_path / f"payload{suffix}"
    path.write_bytes(make(marker))
    assert "contains pickled Python objects" in _load_error(path, arch="gap-cnn")
    assert not marker.exists()


def test_protocol_zero_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "payload.pt"
    path.write_bytes(pickle.dumps(Payload(marker), protocol=0))
    assert "Supported formats" in _load_error(path, arch="gap-cnn")
    assert not marker.exists()


def _pickled_weight_config(data: bytes) -> bytes:
    config = json.loads(data)
    config["config"]["features.0.weight"]["use_pickle"] = True
    return json.dumps(config).encode()


@pytest.mark.parametrize("target", ["sample_inputs", "pickled_weight"])
def test_pt2_with_pickled_payload_refused(tmp_path, exported_file, target):
    # torch.export.load itself would unpickle these with weights_only=False and run the payload
    marker = tmp_path / "pwned"
    evil = _torch_saved(marker)
    if target == "sample_inputs":
        replace = {"data/sample_inputs/model.pt": evil}
    else:
        replace = {"model_weights_config.json": _pickled_weight_config, "data/weights/weight_0": evil}
    path = _rewrite_zip(exported_file, tmp_path / "evil.pt2", replace)
    assert "contains pickled Python objects" in _load_error(path)
    assert not marker.exists()


def test_pt2_payload_refused_even_without_archive_inspection(tmp_path, exported_file, monkeypatch):
    marker = tmp_path / "pwned"
    path = _rewrite_zip(
        exported_file, tmp_path / "evil.pt2", {"data/sample_inputs/model.pt": _torch_saved(marker)}
    )
    monkeypatch.setattr(checkpoint_formats, "_check_pt2_entries", lambda path: None)
    assert "contains pickled Python objects" in _load_error(path)
    assert not marker.exists()


def test_pt2_with_native_code_refused(tmp_path, exported_file):
    path = _rewrite_zip(
        exported_file, tmp_path / "aoti.pt2", add={"data/aotinductor/model/model.so": b"\x7fELF"}
    )
    assert "data/aotinductor/model/model.so" in _load_error(path)


@pytest.mark.parametrize("member", ["data.pkl", "constants.pkl"])
def test_torchscript_with_pickled_payload_refused(tmp_path, member):
    marker = tmp_path / "pwned"
    scripted = _script(_gap(), tmp_path / "gap.pt")
    path = _rewrite_zip(scripted, tmp_path / "evil.pt", {f"/{member}": _raw_pickle(marker)})
    assert "TorchScript archive cannot be loaded" in _load_error(path)
    assert not marker.exists()


# --- damaged and unusable files ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["export", "torchscript", "state_dict"])
def test_truncated_zip(tmp_path, exported_file, kind):
    if kind == "export":
        data = exported_file.read_bytes()
    elif kind == "torchscript":
        data = _script(_gap(), tmp_path / "full.pt").read_bytes()
    else:
        torch.save(_gap().state_dict(), tmp_path / "full.pt")
        data = (tmp_path / "full.pt").read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in _load_error(path, arch="gap-cnn")


def test_unreadable_inputs(tmp_path):
    random_bytes, empty = tmp_path / "noise.pt", tmp_path / "empty.pt2"
    random_bytes.write_bytes(os.urandom(4096).replace(b"PK", b"pk").lstrip(b"\x80") or b"x")
    empty.write_bytes(b"")
    assert "not a format advaudit recognises" in _load_error(random_bytes)
    assert "Supported formats" in _load_error(random_bytes)
    assert "the file is empty" in _load_error(empty)
    assert "does not exist" in _load_error(tmp_path / "missing.pt")
    assert "is a directory" in _load_error(tmp_path)
    assert "input shape must be three positive integers" in _load_error(random_bytes, input_shape=(1, 16))


def test_wrong_input_shape(tmp_path):
    path = _script(_gap(in_channels=3), tmp_path / "rgb.pt")
    message = _load_error(path, input_shape=(1, 16, 16))
    assert "does not accept inputs of shape (2, 1, 16, 16)" in message and "--image-size" in message


def test_num_classes_mismatch(tmp_path):
    assert "outputs 10 logits per input but --num-classes is 5" in _load_error(
        _script(_gap(), tmp_path / "gap.pt"), num_classes=5
    )
    torch.save(_gap().state_dict(), tmp_path / "sd.pt")
    assert "--num-classes is 5 but the classifier weights" in _load_error(
        tmp_path / "sd.pt", arch="gap-cnn", num_classes=5
    )


def test_state_dict_needs_known_arch(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(_gap().state_dict(), path)
    assert "pass --arch NAME" in _load_error(path)
    message = _load_error(path, arch="resnet19")
    assert "unknown architecture 'resnet19'" in message and "resnet18" in message


def test_missing_unexpected_and_misshapen_keys(tmp_path):
    state = _gap().state_dict()
    state.pop("features.0.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "keys.pt")
    message = _load_error(tmp_path / "keys.pt", arch="gap-cnn")
    assert "missing keys: features.0.weight" in message and "unexpected keys: extra.weight" in message
    torch.save(_gap(in_channels=3).state_dict(), tmp_path / "rgb.pt")
    assert "features.0.weight (16, 3, 3, 3) vs (16, 1, 3, 3)" in _load_error(
        tmp_path / "rgb.pt", arch="gap-cnn"
    )


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (TupleNet(), "returns a tuple of 2 items"),
        (DictNet(), "returns a dict (keys logits)"),
        (NanNet(), "NaN or infinite logits"),
    ],
)
def test_bad_outputs(tmp_path, model, message):
    assert message in _load_error(_script(model, tmp_path / "bad.pt"))


def test_traced_fixed_batch(tmp_path):
    path = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(FixedBatchNet(), _inputs(n=2)), str(path))
    assert "a batch of 1" in _load_error(path)


def test_static_batch_export(tmp_path):
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(_gap(), (_inputs(n=1),)), path)
    message = _load_error(path)
    assert "fixed batch size" in message and 'torch.export.Dim("batch")' in message


def test_export_captured_in_training_mode(tmp_path):
    batchnorm, dropout = tmp_path / "bn.pt2", tmp_path / "dropout.pt2"
    torch.export.save(
        torch.export.export(_gap().train(), (_inputs(n=2),), dynamic_shapes=BATCH_DIM), batchnorm
    )
    net = nn.Sequential(nn.Flatten(), nn.Linear(256, 4), nn.Dropout(0.5)).train()
    torch.export.save(torch.export.export(net, (_inputs(n=2),), dynamic_shapes=BATCH_DIM), dropout)
    assert "updates its buffers" in _load_error(batchnorm)
    assert "different outputs for the same input" in _load_error(dropout)


def test_arch_is_refused_for_archives_that_carry_their_architecture(tmp_path):
    net = build_architecture("gap-cnn", 10).eval()
    torch.jit.save(torch.jit.script(net), tmp_path / "scripted.pt")
    with pytest.raises(
        CheckpointError, match="carries its own architecture: --arch is only for weights-only"
    ):
        load_model(tmp_path / "scripted.pt", input_shape=(1, 32, 32), arch="gap-cnn")
