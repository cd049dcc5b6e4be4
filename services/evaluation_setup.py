"""What every part of an evaluation agrees on before it runs: checks, sample count, device, CAM choice."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from services.architecture import ArchitectureAudit
from services.cams import CAM, GradCAM, feature_map_size
from services.checkpoints import LoadedModel
from services.datasets import Dataset
from services.errors import ConfigError, DatasetError, EvaluationCancelled
from services.specs import EvaluationConfig


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when available, else CPU; anything else must be a usable torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    return device


@dataclass
class Setup:
    """The checked facts of one evaluation: how many samples, on which device, the warnings so far."""

    num_samples: int
    device: torch.device
    warnings: list[str] = field(default_factory=list)


def _check_labels(dataset: Dataset, num_classes: int, limit: int | None) -> None:
    labels = dataset.labels(limit)
    if len(labels) == 0:
        raise DatasetError("the dataset is empty: there is nothing to evaluate")
    top = int(labels.max())
    if top >= num_classes:
        raise DatasetError(
            f"the dataset has label {top} but the model has only {num_classes} classes (0…{num_classes - 1}); "
            "check that the dataset and the model use the same classes"
        )


def _check_loss(config: EvaluationConfig, num_classes: int) -> None:
    if config.loss != "dlr" or not {"bim", "pgd"} & set(config.attacks):
        return
    needed = 4 if config.targeted else 3
    if num_classes < needed:
        raise ConfigError(
            f"the dlr loss needs at least {needed} classes{' for a targeted attack' if needed == 4 else ''}; "
            f"the model has {num_classes}: use --loss ce or cw"
        )


def prepare(loaded: LoadedModel, dataset: Dataset, config: EvaluationConfig) -> Setup:
    """Check that the model, the dataset and the options fit together; the sample count and the device."""
    device = resolve_device(config.device)
    warnings: list[str] = []
    if config.channels_last and device.type != "cuda":
        warnings.append("channels_last is meant for CUDA; on this device it may be slower")
    if config.precision == "bf16" and device.type != "cuda":
        warnings.append("bf16 autocast is meant for CUDA; on most CPUs it is slower than fp32")
    num_classes = loaded.info.num_classes
    if tuple(dataset.info.input_shape) != tuple(loaded.info.input_shape):
        raise DatasetError(
            f"the dataset's images are {tuple(dataset.info.input_shape)} (C, H, W) but the model was checked "
            f"for {tuple(loaded.info.input_shape)}"
        )
    _check_loss(config, num_classes)
    _check_labels(dataset, num_classes, config.limit)
    n = min(len(dataset), config.limit) if config.limit else len(dataset)
    return Setup(n, device, warnings)


@contextmanager
def on_device(loaded: LoadedModel, device: torch.device, channels_last: bool) -> Iterator[torch.nn.Module]:
    """The model on the run's device (and memory format), put back where it was afterwards."""
    model = loaded.module
    home = next((p.device for p in model.parameters()), device)
    loaded.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        loaded.to(home)


@contextmanager
def optional_section(name: str, warnings: list[str]) -> Iterator[None]:
    """A part of the report the evaluation can do without: its failure becomes a warning, never the job's.

    The sweep is the result; losing it (or a whole job) to a figure or an audit that failed afterwards
    would throw away the work that was done.
    """
    try:
        yield
    except EvaluationCancelled:
        raise
    except Exception as error:
        warnings.append(f"{name} skipped: {error}")


def cam_extractor(
    loaded: LoadedModel, audit: ArchitectureAudit, config: EvaluationConfig, warnings: list[str]
) -> CAM | GradCAM | None:
    """CAM or Grad-CAM as chosen by `config.cam`, or None when the audit is off or impossible."""
    if config.cam == "none":
        return None
    if not loaded.supports_hooks:
        message = (
            "TorchScript archives do not support the hooks a CAM audit needs: register the weights "
            "with --arch, or export the model with torch.export (.pt2)"
        )
        if config.cam != "auto":
            raise ConfigError(message)
        warnings.append(f"CAM audit skipped: {message}")
        return None

    def positions(layer: str) -> int:
        return math.prod(feature_map_size(loaded.named_module, loaded.network, layer, audit.input_shape))

    if config.cam != "auto":
        if positions(config.cam) < 2:
            raise ConfigError(
                f"layer {config.cam!r} outputs a 1×1 (or non-spatial) map at this input size: "
                "a CAM there is constant; pick an earlier conv layer"
            )
        return GradCAM(loaded.named_module, loaded.network, config.cam)
    head = audit.cam_head
    if head is not None and positions(head.feature_layer) >= 2:
        return CAM(loaded.named_module, loaded.network, head.feature_layer, head.classifier)
    layer = audit.last_spatial_conv()
    if layer is None:
        warnings.append("CAM audit skipped: the model has no conv layer with a spatial output map")
        return None
    return GradCAM(loaded.named_module, loaded.network, layer)


def sample_choice(n: int, config: EvaluationConfig, with_cam: bool) -> tuple[list[int], np.ndarray]:
    """Seeded random samples for the gallery and triptychs, and which of them get CAMs."""
    pool = min(n, max(config.cam_samples if with_cam else 0, config.triptychs))
    order = (
        np.random.default_rng(config.seed).choice(n, size=pool, replace=False) if pool else np.array([], int)
    )
    selected = sorted(order.tolist())
    cam_indices = set(order[: min(config.cam_samples, pool)].tolist()) if with_cam else set()
    return selected, np.array([i in cam_indices for i in selected], dtype=bool)


def kept_samples(n: int, config: EvaluationConfig) -> list[int]:
    """The samples a shard keeps inputs and directions of: the choice with and without a CAM audit.

    Whether the model gets a CAM audit is known only after the architecture audit, which runs once, when
    the shards are merged; both choices together are at most cam_samples + triptychs samples.
    """
    return sorted(set(sample_choice(n, config, True)[0]) | set(sample_choice(n, config, False)[0]))
