"""The one entry point: evaluate(model, dataset, config) → Report. The CLI and the worker both call it."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from services.architecture import ArchitectureAudit, audit_architecture, filter_weights
from services.attacks import frozen_eval, perturb
from services.cams import CAM, GradCAM, confidence_drop, pearson, resolve_layer, top_region_iou
from services.checkpoints import LoadedModel
from services.datasets import Dataset
from services.errors import ConfigError, DatasetError
from services.report import CamAudit, Report, Triptych
from services.specs import EvaluationConfig
from services.sweep import run_sweep

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


def _cam_extractor(loaded: LoadedModel, audit: ArchitectureAudit, config: EvaluationConfig, warnings: list[str]):
    """CAM or Grad-CAM as chosen by `config.cam`, or None when the audit is off or impossible."""
    if config.cam == "none":
        return None
    if not loaded.supports_hooks:
        message = ("TorchScript archives do not support the hooks a CAM audit needs: register the weights "
                   "with --arch, or export the model with torch.export (.pt2)")
        if config.cam != "auto":
            raise ConfigError(message)
        warnings.append(f"CAM audit skipped: {message}")
        return None
    if config.cam != "auto":
        resolve_layer(loaded.network, config.cam)
        return GradCAM(loaded.module, loaded.network, config.cam)
    if audit.cam_head is not None:
        head = audit.cam_head
        return CAM(loaded.module, loaded.network, head.feature_layer, head.classifier)
    layer = audit.last_spatial_conv()
    if layer is None:
        warnings.append("CAM audit skipped: the model has no conv layer with a spatial output map")
        return None
    return GradCAM(loaded.module, loaded.network, layer)


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


def _cam_audit(extractor, model, sweep, config: EvaluationConfig, device) -> tuple[CamAudit, list[Triptych]]:
    indices = sorted(sweep.selected)
    x = torch.stack([sweep.selected[i][0] for i in indices]).to(device)
    direction = torch.stack([sweep.selected[i][1] for i in indices]).to(device)
    adv = perturb(x, direction, config.cam_eps)
    clean_class = sweep.clean_pred[indices].to(device)
    with extractor:
        clean_maps, _ = extractor(x, clean_class)
        with torch.inference_mode():
            adv_probs = model(adv).float().softmax(1)
        adv_conf, adv_class = adv_probs.max(1)
        adv_maps, _ = extractor(adv, adv_class)
    drop = confidence_drop(model, x, clean_maps, clean_class)
    audit = CamAudit(
        method=extractor.method, layer=extractor.layer, eps=config.cam_eps, indices=np.array(indices),
        labels=sweep.labels[indices].numpy(), clean=clean_maps.cpu().numpy(), adversarial=adv_maps.cpu().numpy(),
        clean_class=sweep.clean_pred[indices].numpy(), adversarial_class=adv_class.cpu().numpy(),
        clean_confidence=sweep.clean_conf[indices].numpy(), adversarial_confidence=adv_conf.cpu().numpy(),
        similarity=pearson(clean_maps, adv_maps).cpu().numpy(), top20_iou=top_region_iou(clean_maps, adv_maps).cpu().numpy(),
        confidence_drop=drop.cpu().numpy(), images=x.cpu().numpy(), adversarial_images=adv.cpu().numpy(),
    )
    return audit, _triptychs(audit, direction.cpu().numpy(), config.triptychs)


def _triptychs(audit: CamAudit, directions: np.ndarray, count: int) -> list[Triptych]:
    """Prefer samples the attack flipped from a correct prediction: the picture the report is for."""
    flipped = (audit.clean_class == audit.labels) & (audit.adversarial_class != audit.clean_class)
    order = sorted(range(len(audit.indices)), key=lambda i: (not flipped[i], i))[:count]
    return [
        Triptych(
            index=int(audit.indices[i]), label=int(audit.labels[i]), eps=audit.eps, clean=audit.images[i],
            perturbation=directions[i], adversarial=audit.adversarial_images[i],
            clean_class=int(audit.clean_class[i]), clean_confidence=float(audit.clean_confidence[i]),
            adversarial_class=int(audit.adversarial_class[i]),
            adversarial_confidence=float(audit.adversarial_confidence[i]),
        )
        for i in order
    ]


def evaluate(
    loaded: LoadedModel,
    dataset: Dataset,
    config: EvaluationConfig,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Report:
    """FGSM sweep, targeted sweep, CAM audit and architecture audit of one model on one dataset."""
    started = time.perf_counter()
    device = resolve_device(config.device)
    warnings: list[str] = []
    if config.channels_last and device.type != "cuda":
        warnings.append("channels_last is meant for CUDA; on this device it may be slower")
    num_classes = loaded.info.num_classes
    if tuple(dataset.info.input_shape) != tuple(loaded.info.input_shape):
        raise DatasetError(
            f"the dataset's images are {tuple(dataset.info.input_shape)} (C, H, W) but the model was checked "
            f"for {tuple(loaded.info.input_shape)}"
        )
    _check_labels(dataset, num_classes, config.limit)
    n = min(len(dataset), config.limit) if config.limit else len(dataset)
    audit = audit_architecture(loaded.network, dataset.info.input_shape, exported=loaded.exported)
    extractor = _cam_extractor(loaded, audit, config, warnings)
    audit_seconds = time.perf_counter() - started

    model = loaded.module.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    picks = min(n, config.cam_samples) if extractor is not None else 0
    rng = np.random.default_rng(config.seed)
    selected = sorted(rng.choice(n, size=picks, replace=False).tolist()) if picks else []

    sweep_started = time.perf_counter()
    sweep = run_sweep(
        model, dataset.batches(config.batch_size, limit=n), num_samples=n, num_classes=num_classes,
        eps=config.eps, targeted_eps=config.sweep_targeted_eps if config.targeted else (),
        policy=config.targeted, device=device, precision=config.precision, channels_last=config.channels_last,
        seed=config.seed, select=selected, keep_directions=config.save_adversarial,
        progress=(lambda done, total: progress("sweep", done, total)) if progress else None,
        should_stop=should_stop,
    )
    sweep_seconds = time.perf_counter() - sweep_started

    cam_started = time.perf_counter()
    cam, triptychs = (None, [])
    if extractor is not None and selected:
        with frozen_eval(model):
            cam, triptychs = _cam_audit(extractor, model, sweep, config, device)
        if progress:
            progress("cam", len(selected), len(selected))
    cam_seconds = time.perf_counter() - cam_started
    total = time.perf_counter() - started
    timing = {
        "seconds": total, "sweep_seconds": sweep_seconds, "cam_seconds": cam_seconds,
        "audit_seconds": audit_seconds, "samples_per_second": n / sweep_seconds if sweep_seconds > 0 else None,
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    first_filters = filter_weights(loaded.network, audit.layers[0]) if audit.layers else None
    return Report(
        model=loaded.info, dataset=dataset.info, config=config, num_samples=n, sweep=sweep,
        architecture=audit, cam=cam, triptychs=triptychs, timing=timing, warnings=warnings,
        first_filters=first_filters,
    )
