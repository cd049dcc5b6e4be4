"""Build a named architecture and load a state_dict into it strictly, with clear messages for every mismatch."""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
import torchvision
from torch import nn

from services import zoo
from services.errors import CheckpointError

_SENTINEL_CLASSES = (
    7919  # a prime no real layer width uses: marks the classifier's parameters in a probe build
)


def list_architectures() -> list[str]:
    """Every name `arch` accepts: our demo architectures, then torchvision's classification models."""
    torchvision_names: list[str] = torchvision.models.list_models(module=torchvision.models)
    return list(zoo.ARCHITECTURES) + torchvision_names


def network_from_weights(
    arch: str | None,
    state: dict[str, torch.Tensor],
    num_classes: int | None,
    in_channels: int,
    path: Path,
    default_classes: int | None = None,
) -> nn.Module:
    """Build `arch` and load `state` into it strictly; the class count is inferred from the classifier weights."""
    if arch is None:
        raise CheckpointError(
            f"{path} holds only weights (a state_dict), so advaudit needs the architecture that produced them: "
            f"pass --arch NAME (arch= in the API), NAME being one of ours ({', '.join(zoo.ARCHITECTURES)}) or a "
            "torchvision classification model such as resnet18 (see list_architectures()); "
            "add --num-classes N if it cannot be inferred from the weights"
        )
    _check_arch(arch)
    inferred = _infer_num_classes(arch, state, in_channels) or default_classes
    if num_classes is not None and inferred is not None and num_classes != inferred:
        raise CheckpointError(
            f"--num-classes is {num_classes} but the classifier weights in {path} have {inferred} outputs"
        )
    classes = num_classes or inferred
    if classes is None:
        raise CheckpointError(
            f"cannot infer the number of classes of {arch!r} from {path} (no classifier weights found: "
            "is --arch right?); pass --num-classes N"
        )
    network = _build(arch, classes, in_channels)
    _load_strict(network, state, arch, path)
    return network.eval()


def _check_arch(arch: str) -> None:
    names = list_architectures()
    if arch not in names:
        close = difflib.get_close_matches(arch, names, n=3)
        suggestion = f" (did you mean {', '.join(close)}?)" if close else ""
        raise CheckpointError(
            f"unknown architecture {arch!r}{suggestion}: use one of ours ({', '.join(zoo.ARCHITECTURES)}) or a "
            "torchvision classification model name (see list_architectures())"
        )


def _build(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    try:
        if arch in zoo.ARCHITECTURES:
            return zoo.build_architecture(arch, num_classes, in_channels=in_channels)
        model: nn.Module = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        return model
    except Exception as exc:  # builders raise assorted errors for bad argument combinations
        raise CheckpointError(
            f"cannot build architecture {arch!r} with {num_classes} classes: {exc}"
        ) from None


def _infer_num_classes(arch: str, state: dict[str, torch.Tensor], in_channels: int) -> int | None:
    try:
        with torch.device("meta"):  # shapes only: no memory, no random initialisation
            probe = _build(arch, _SENTINEL_CLASSES, in_channels)
        names = [
            key
            for key, value in probe.state_dict().items()
            if value.ndim and value.shape[0] == _SENTINEL_CLASSES
        ]
    except Exception:  # a few builders (torchvision's regnets) cannot run on the meta device
        names = []
    if not names:  # fall back on the last weight matrix, which is the classifier head in most networks
        names = [key for key, value in state.items() if key.endswith(".weight") and value.ndim >= 2][-1:]
    widths = {state[key].shape[0] for key in names if key in state and state[key].ndim}
    return widths.pop() if len(widths) == 1 else None


def _load_strict(network: nn.Module, state: dict[str, torch.Tensor], arch: str, path: Path) -> None:
    expected = network.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    problems = [
        f"{label}: {first_names(names)}"
        for label, names in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (checkpoint vs architecture)", mismatched),
        )
        if names
    ]
    if problems:
        raise CheckpointError(
            f"the weights in {path} do not fit architecture {arch!r} — {'; '.join(problems)}. Check --arch, "
            "--num-classes and the input channels, and that the state_dict was saved from this architecture"
        )
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the weights in {path} do not fit architecture {arch!r}: {exc}") from None


def first_names(names: list[str], count: int = 5) -> str:
    more = f" (+{len(names) - count} more)" if len(names) > count else ""
    return ", ".join(names[:count]) + more
