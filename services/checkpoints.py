"""Load a user's classifier safely (never unpickling arbitrary objects), in eval mode, checked by a dummy forward."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from services import zoo
from services.checkpoint_formats import (
    SAFETENSORS,
    STATE_DICT,
    SUPPORTED_FORMATS,
    TORCH_EXPORT,
    TORCHSCRIPT,
    detect_format,
    exported_module,
    exported_network,
    load_exported,
    load_torchscript,
    read_state_dict,
)
from services.checkpoint_weights import first_names, list_architectures, network_from_weights
from services.errors import CheckpointError
from services.files import sha256_file
from services.limits import MAX_CLASSES

__all__ = [
    "LoadedModel",
    "ModelInfo",
    "NormalizedModel",
    "demo_model_path",
    "list_architectures",
    "load_model",
    "sha256_file",
]

DEMO_PREFIX = "demo:"
DEMO_FORMAT = "demo"
_DEMO_CLASSES, _DEMO_CHANNELS = 10, 1


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, as recorded in the report."""

    source: str
    format: str
    sha256: str
    num_classes: int
    input_shape: tuple[int, int, int]
    arch: str | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        data = asdict(self)
        for key in ("input_shape", "mean", "std"):
            data[key] = list(data[key]) if data[key] is not None else None
        return data


@dataclass
class LoadedModel:
    """A validated classifier: `module` takes [0, 1] inputs, `network` is the user's own module tree.

    `module` is the fastest way to run the model (the attacks use it); `named_module` runs it through
    `network`, so that hooks on `network`'s layers fire (CAMs). They are one module except for torch.export
    archives, whose named (unflattened) view is slower to run and shares the fast module's weights.
    """

    module: nn.Module
    network: nn.Module
    info: ModelInfo
    exported: torch.export.ExportedProgram | None = None
    hookable: nn.Module | None = None  # `named_module` when it is not `module`

    @property
    def supports_hooks(self) -> bool:
        return not isinstance(self.network, torch.jit.ScriptModule)

    @property
    def named_module(self) -> nn.Module:
        return self.hookable if self.hookable is not None else self.module

    def to(self, device: torch.device | str) -> None:
        """Move both ways of running the model (their parameters are shared; buffers are moved for each)."""
        self.module.to(device)
        if self.hookable is not None:
            self.hookable.to(device)


class NormalizedModel(nn.Module):
    """Applies the training-time mean/std normalisation inside the model, so callers feed [0, 1] pixels."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, network: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.network((x - self.mean) / self.std)
        return logits


def load_model(
    source: str | os.PathLike[str],
    *,
    input_shape: tuple[int, int, int],
    arch: str | None = None,
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Load a checkpoint or `demo:NAME`, wrap normalisation, move to `device` and validate one forward pass."""
    shape = _check_input_shape(input_shape)
    mean_std = _check_mean_std(mean, std, shape[0])
    target = _check_device(device)
    text = os.fspath(source)
    exported = fast = None
    if text.startswith(DEMO_PREFIX):
        arch = _check_demo_arch(text.removeprefix(DEMO_PREFIX), arch)
        path, fmt = demo_model_path(arch), DEMO_FORMAT
        network = _load_demo(arch, path)
    else:
        path = _check_file(text)
        fmt = detect_format(path)
        if arch is not None and fmt in (TORCH_EXPORT, TORCHSCRIPT):
            raise CheckpointError(
                f"{path.name} is a {fmt} archive that carries its own architecture: --arch is only for "
                "weights-only checkpoints (.safetensors, state_dict); drop --arch"
            )
        if fmt == TORCH_EXPORT:
            exported = load_exported(path, target)
            # An exported graph keeps the train/eval behaviour it was captured with; .eval() only sets flags,
            # so a training-mode capture is caught by the buffer/determinism checks of the dummy forward.
            network, arch = exported_network(exported, path), None
            fast = exported_module(exported, network, path)
        elif fmt == TORCHSCRIPT:
            network, arch = load_torchscript(path, target), None
        else:
            fmt = SAFETENSORS if fmt == SAFETENSORS else STATE_DICT
            network = network_from_weights(arch, read_state_dict(path), num_classes, shape[0], path)
    named = NormalizedModel(network, *mean_std) if mean_std else network
    named = _to_device(named, target).eval()
    module, hookable = named, None
    if fast is not None:  # attacks run the fast graph; CAM hooks need the named view of the same weights
        module = _to_device(NormalizedModel(fast, *mean_std) if mean_std else fast, target).eval()
        hookable = named
    width = _check_forward(module, network, shape, target, num_classes)
    if hookable is not None:
        _check_same_outputs(module, hookable, shape, target, path)
    info = ModelInfo(text, fmt, sha256_file(path), width, shape, arch, *(mean_std or (None, None)))
    return LoadedModel(module, network, info, exported, hookable)


def demo_model_path(name: str) -> Path:
    """Where the shipped TorchScript file of `demo:NAME` lives (package data)."""
    return Path(__file__).parent / "demo_models" / f"{name}.pt"


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(input_shape)
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise CheckpointError(
            f"input shape must be three positive integers C,H,W (e.g. 3,32,32), got {input_shape!r}"
        )
    return values


def _check_mean_std(
    mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise CheckpointError("give both mean and std for input normalisation, or neither")
    try:
        values = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise CheckpointError(f"mean and std must be lists of numbers, got {mean!r} and {std!r}") from None
    for name, numbers in zip(("mean", "std"), values, strict=True):
        if len(numbers) != channels:
            raise CheckpointError(
                f"{name} has {len(numbers)} values but the input has {channels} channels: give one value per channel"
            )
        if not all(math.isfinite(v) for v in numbers):
            raise CheckpointError(f"{name} must be finite numbers, got {list(numbers)}")
    if any(v <= 0 for v in values[1]):
        raise CheckpointError(f"std values must be > 0, got {list(values[1])}")
    return values


def _check_device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise CheckpointError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps") from None


def _to_device(module: nn.Module, device: torch.device) -> nn.Module:
    try:
        return module.to(device)
    except (RuntimeError, AssertionError) as exc:  # torch raises AssertionError when built without CUDA
        raise CheckpointError(f"cannot move the model to device {device}: {exc}") from None


def _check_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        demos = ", ".join(DEMO_PREFIX + name for name in zoo.DEMO_MODELS)
        raise CheckpointError(
            f"model file {path} does not exist: give a checkpoint path or a demo model ({demos})"
        )
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a directory: give a model file. Supported formats: {SUPPORTED_FORMATS}."
        )
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"cannot read {path}: check its permissions")
    return path


def _check_demo_arch(name: str, arch: str | None) -> str:
    if name not in zoo.DEMO_MODELS:
        demos = ", ".join(DEMO_PREFIX + demo for demo in zoo.DEMO_MODELS)
        raise CheckpointError(f"unknown demo model {DEMO_PREFIX}{name}: choose one of {demos}")
    if arch is not None and arch != name:
        raise CheckpointError(f"{DEMO_PREFIX}{name} already names its architecture; drop --arch {arch}")
    return name


def _load_demo(name: str, path: Path) -> nn.Module:
    if not path.is_file():
        raise CheckpointError(
            f"the demo model file {path} is missing: it ships with advaudit; reinstall the package or train the demos"
        )
    fmt = detect_format(path)
    state = (
        load_torchscript(path, torch.device("cpu")).state_dict()
        if fmt == TORCHSCRIPT
        else read_state_dict(path)
    )
    # Rebuilt as the Python architecture (not the ScriptModule) so forward hooks for CAMs work.
    return network_from_weights(name, dict(state), None, _DEMO_CHANNELS, path, _DEMO_CLASSES)


def _check_forward(
    module: nn.Module,
    network: nn.Module,
    shape: tuple[int, int, int],
    device: torch.device,
    num_classes: int | None,
) -> int:
    """Run a dummy batch through the model and return the number of classes it predicts."""
    batch = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0)).to(device)
    buffers = {name: value.detach().clone() for name, value in network.named_buffers()}
    with torch.no_grad():
        logits = _forward(module, batch, f"inputs of shape {tuple(batch.shape)} (N, C, H, W)")
        width = _check_logits(logits, 2)
        if num_classes is not None and width != num_classes:
            raise CheckpointError(
                f"the model outputs {width} logits per input but --num-classes is {num_classes}"
            )
        single = _forward(
            module,
            batch[:1],
            "a batch of 1 (a batch of 2 worked: was it traced or exported with a fixed batch size?)",
        )
        if _check_logits(single, 1) != width:
            raise CheckpointError(
                "the model outputs a different number of logits for a batch of 1 than for 2"
            )
        repeat = _forward(module, batch, "the same batch twice")
    changed = [
        name
        for name, value in network.named_buffers()
        if name in buffers and not torch.equal(value, buffers[name])
    ]
    if changed:
        raise CheckpointError(
            f"the model updates its buffers ({first_names(changed, 3)}) during an inference forward pass: it behaves as "
            "in training mode (BatchNorm statistics); call model.eval() before exporting or saving it"
        )
    if (
        not isinstance(logits, torch.Tensor)  # never: _check_logits refused it
        or not isinstance(repeat, torch.Tensor)
        or not torch.allclose(logits.float(), repeat.float(), rtol=1e-4, atol=1e-5)
    ):
        raise CheckpointError(
            "the model gives different outputs for the same input: dropout or other randomness is active; "
            "call model.eval() before exporting or saving it"
        )
    return width


def _check_same_outputs(
    module: nn.Module, named: nn.Module, shape: tuple[int, int, int], device: torch.device, path: Path
) -> None:
    """The fast graph and the named view of an exported program must be the same function."""
    batch = torch.rand((2, *shape), generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        fast, slow = module(batch), _forward(named, batch, "the unflattened (named) view of the program")
    if not isinstance(slow, torch.Tensor) or not torch.allclose(
        fast.float(), slow.float(), rtol=1e-4, atol=1e-5
    ):
        raise CheckpointError(
            f"{path.name}: the exported program and its unflattened module disagree on the same "
            "inputs; re-export the model"
        )


def _forward(module: nn.Module, batch: torch.Tensor, what: str) -> object:
    try:
        return module(batch)
    except Exception as exc:  # any failure of user code means the model does not fit these inputs
        raise CheckpointError(
            f"the model does not accept {what}; its input size comes from the dataset: check the dataset (or --image-size) and --mean/--std: {exc}"
        ) from None


def _check_logits(output: object, batch_size: int) -> int:
    """The number of classes, after checking `output` is finite float logits of shape (batch_size, classes)."""
    if isinstance(output, (tuple, list)):
        raise CheckpointError(
            f"the model returns a {type(output).__name__} of {len(output)} items, not a logits tensor: "
            "advaudit needs forward(x) to return one (N, num_classes) tensor; wrap the model to return only the logits"
        )
    if isinstance(output, dict):
        raise CheckpointError(
            f"the model returns a dict (keys {first_names([str(key) for key in output], 3)}), not a logits tensor: "
            "advaudit needs forward(x) to return one (N, num_classes) tensor; wrap the model to return only the logits"
        )
    if not isinstance(output, torch.Tensor):
        raise CheckpointError(
            f"the model returns a {type(output).__name__}, not a (N, num_classes) logits tensor"
        )
    if output.ndim != 2 or output.shape[0] != batch_size or not output.is_floating_point():
        raise CheckpointError(
            f"the model returns a {output.dtype} tensor of shape {tuple(output.shape)} for a batch of {batch_size}; "
            f"advaudit needs float logits of shape ({batch_size}, num_classes)"
        )
    width = output.shape[1]
    if width < 2:
        raise CheckpointError(
            f"the model predicts {width} class(es); advaudit needs at least 2 (one logit per class)"
        )
    if width > MAX_CLASSES:
        raise CheckpointError(
            f"the model outputs {width} logits per input; at most {MAX_CLASSES} classes are supported"
        )
    if not torch.isfinite(output).all():
        raise CheckpointError(
            "the model outputs NaN or infinite logits on a dummy batch: the weights are probably corrupt or diverged"
        )
    return width
