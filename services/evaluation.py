"""The one entry point: evaluate(model, dataset, config) → Report. The CLI and the worker both call it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from services.architecture import ArchitectureAudit, audit_architecture, filter_weights
from services.attacks import frozen_eval
from services.cam_audit import attacked_samples, cam_audit, triptychs
from services.cams import CAM, GradCAM, feature_map_size
from services.checkpoints import LoadedModel
from services.datasets import Dataset
from services.errors import ConfigError, DatasetError, EvaluationCancelled
from services.report import Report
from services.robust import add_black_box
from services.sanity import CHECKS_BY_NAME, Assessment, assess
from services.specs import EvaluationConfig
from services.sweep import SweepResult, cancellable_forward, run_sweep

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stage is "sweep" or "cam"."""


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


def _cam_extractor(
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


def _should_escalate(config: EvaluationConfig, sanity: dict[str, Any]) -> bool:
    """An L∞ run without a black-box attack whose checks point at masked gradients: its white-box worst case
    may be the mask's. (A check that only says an attack is weak, such as targeted beating untargeted, does
    not escalate: it would make every FGSM-only run pay for Square.)"""
    masked = any(
        check["status"] == "failed" and CHECKS_BY_NAME[check["name"]].masking for check in sanity["checks"]
    )
    return masked and config.norm == "linf" and "square" not in config.attacks


def _escalate(
    model: torch.nn.Module,
    dataset: Dataset,
    config: EvaluationConfig,
    sweep: SweepResult,
    assessment: Assessment,
    device: torch.device,
    n: int,
    should_stop: Callable[[], bool] | None,
    warnings: list[str],
) -> EvaluationConfig:
    """Add Square to a suspicious run, on the samples the white-box attacks left robust: a model that masks
    its gradients must not keep the robustness the mask gave it. Returns the config the report records."""
    escalated = replace(config, attacks=(*config.attacks, "square"))
    failed = [str(check["name"]) for check in assessment.sanity["checks"] if check["status"] == "failed"]

    forward = cancellable_forward(model, device, config.precision, should_stop)
    assert sweep.robust is not None
    spec = next(s for s in escalated.attack_specs if s.name == "square")
    with frozen_eval(model):
        add_black_box(
            sweep.robust,
            spec,
            forward,
            dataset.batches(config.batch_size, limit=n),
            sweep.clean_pred == sweep.labels,
            assessment.worst,
            device,
        )
    warnings.append(
        f"the sanity checks found this run suspicious ({', '.join(failed)}): square (black-box, "
        f"{spec.queries} queries) was added to the worst case on the samples the white-box attacks left robust"
    )
    return escalated


def _sample_choice(n: int, config: EvaluationConfig, with_cam: bool) -> tuple[list[int], np.ndarray]:
    """Seeded random samples for the gallery and triptychs, and which of them get CAMs."""
    pool = min(n, max(config.cam_samples if with_cam else 0, config.triptychs))
    order = (
        np.random.default_rng(config.seed).choice(n, size=pool, replace=False) if pool else np.array([], int)
    )
    selected = sorted(order.tolist())
    cam_indices = set(order[: min(config.cam_samples, pool)].tolist()) if with_cam else set()
    return selected, np.array([i in cam_indices for i in selected], dtype=bool)


def evaluate(
    loaded: LoadedModel,
    dataset: Dataset,
    config: EvaluationConfig,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Report:
    """The attacks' ε-sweeps (FGSM, targeted FGSM, the iterative and black-box attacks), their worst case and
    sanity checks, the CAM audit and the architecture audit of one model on one dataset."""
    started = time.perf_counter()
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
    audit = ArchitectureAudit.unavailable(dataset.info.input_shape)
    with optional_section("architecture audit", warnings):
        audit = audit_architecture(loaded.network, dataset.info.input_shape, exported=loaded.exported)
    audit_seconds = time.perf_counter() - started

    model = loaded.module
    home = next((p.device for p in model.parameters()), device)
    loaded.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        extractor = None
        if config.cam == "auto":
            with optional_section("CAM audit", warnings):
                extractor = _cam_extractor(loaded, audit, config, warnings)
        else:  # a layer the user named: a mistake there is theirs to fix, before any work is done
            extractor = _cam_extractor(loaded, audit, config, warnings)
        selected, with_cam = _sample_choice(n, config, extractor is not None)
        sweep_started = time.perf_counter()
        sweep = run_sweep(
            model,
            dataset.batches(config.batch_size, limit=n),
            num_samples=n,
            num_classes=num_classes,
            eps=config.eps,
            targeted_eps=config.sweep_targeted_eps if config.targeted else (),
            policy=config.targeted,
            device=device,
            precision=config.precision,
            channels_last=config.channels_last,
            seed=config.seed,
            select=selected,
            keep_directions=config.save_adversarial,
            progress=(lambda done, total: progress("sweep", done, total)) if progress else None,
            should_stop=should_stop,
            attacks=config.attack_specs,
            worst_case_attacks=config.worst_case_attacks,
            probe=config.sanity_probe,
            inference_layout=config.inference_layout,
        )
        sweep_seconds = time.perf_counter() - sweep_started
        assessment = assess(sweep, config, num_classes)
        if _should_escalate(config, assessment.sanity):
            config = _escalate(model, dataset, config, sweep, assessment, device, n, should_stop, warnings)
            assessment = assess(sweep, config, num_classes)
        cam_started = time.perf_counter()
        cam, pictures = None, []
        if selected:
            with frozen_eval(model), optional_section("CAM audit and triptychs", warnings):
                samples = attacked_samples(model, sweep, config.cam_eps, device, config.batch_size)
                pictures = triptychs(samples, config.triptychs)
                if extractor is not None and with_cam.any():
                    cam = cam_audit(extractor, model, samples, with_cam, device, config.batch_size)
                    if progress:
                        progress("cam", int(with_cam.sum()), int(with_cam.sum()))
        cam_seconds = time.perf_counter() - cam_started
    finally:
        if config.channels_last:
            model.to(memory_format=torch.contiguous_format)
        loaded.to(home)
    timing = {
        "seconds": time.perf_counter() - started,
        "sweep_seconds": sweep_seconds,
        "cam_seconds": cam_seconds,
        "audit_seconds": audit_seconds,
        "samples_per_second": n / sweep_seconds if sweep_seconds > 0 else None,
        "inference_layout": sweep.inference_layout,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    first_filters = None
    if audit.layers:
        with optional_section("filter grid", warnings):
            first_filters = filter_weights(loaded.network, audit.layers[0])
    return Report(
        model=loaded.info,
        dataset=dataset.info,
        config=config,
        num_samples=n,
        sweep=sweep,
        architecture=audit,
        cam=cam,
        triptychs=pictures,
        timing=timing,
        warnings=warnings,
        first_filters=first_filters,
        assessment=assessment,
    )
