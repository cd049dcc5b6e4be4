"""The one entry point: evaluate(model, dataset, config) → Report. The CLI and the worker both call it.

An evaluation is a per-sample part, sweep_range (the attacks on any range of samples, seeded by dataset
index), and a finishing part, finish (architecture audit, worst case and sanity checks, escalation, CAM
audit, features at depth), run once over the merged sweep. evaluate = finish(sweep over every sample); a
sharded job runs sweep_range per shard on any worker and finish on the one that merges them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from services.architecture import ArchitectureAudit, audit_architecture, filter_weights
from services.attacks import frozen_eval
from services.cam_audit import attacked_samples, cam_audit, triptychs
from services.cams import CAM, GradCAM
from services.checkpoints import LoadedModel
from services.datasets import Dataset
from services.evaluation_setup import (
    Setup,
    cam_extractor,
    kept_samples,
    on_device,
    optional_section,
    prepare,
    resolve_device,
    sample_choice,
)
from services.feature_depths import FeatureDepth
from services.features import compute_features, feature_plan
from services.report import Report
from services.robust import add_black_box
from services.sanity import CHECKS_BY_NAME, Assessment, assess
from services.sharding import shard_count, shard_ranges
from services.specs import EvaluationConfig
from services.sweep import SweepResult, cancellable_forward, run_sweep

__all__ = ["Progress", "evaluate", "finish", "resolve_device", "sweep_range"]

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stage is "sweep" or "cam"."""


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
    setup: Setup,
    should_stop: Callable[[], bool] | None,
) -> EvaluationConfig:
    """Add Square to a suspicious run, on the samples the white-box attacks left robust: a model that masks
    its gradients must not keep the robustness the mask gave it. Returns the config the report records."""
    escalated = replace(config, attacks=(*config.attacks, "square"))
    failed = [str(check["name"]) for check in assessment.sanity["checks"] if check["status"] == "failed"]

    forward = cancellable_forward(model, setup.device, config.precision, should_stop)
    assert sweep.robust is not None
    spec = next(s for s in escalated.attack_specs if s.name == "square")
    with frozen_eval(model):
        add_black_box(
            sweep.robust,
            spec,
            forward,
            dataset.batches(config.batch_size, limit=setup.num_samples),
            sweep.clean_pred == sweep.labels,
            assessment.worst,
            setup.device,
        )
    setup.warnings.append(
        f"the sanity checks found this run suspicious ({', '.join(failed)}): square (black-box, "
        f"{spec.queries} queries) was added to the worst case on the samples the white-box attacks left robust"
    )
    return escalated


def _sweep(
    loaded: LoadedModel,
    dataset: Dataset,
    config: EvaluationConfig,
    setup: Setup,
    rows: tuple[int, int],
    select: Sequence[int],
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
) -> SweepResult:
    """The sweep of samples rows[0] … rows[1] − 1 (the model already on the device)."""
    start, stop = rows
    return run_sweep(
        loaded.module,
        dataset.batches(config.batch_size, limit=stop, start=start),
        num_samples=stop - start,
        num_classes=loaded.info.num_classes,
        eps=config.eps,
        targeted_eps=config.sweep_targeted_eps if config.targeted else (),
        policy=config.targeted,
        device=setup.device,
        precision=config.precision,
        channels_last=config.channels_last,
        seed=config.seed,
        first_index=start,
        total_samples=setup.num_samples,
        select=select,
        keep_directions=config.save_adversarial,
        progress=(lambda done, total: progress("sweep", start + done, setup.num_samples))
        if progress
        else None,
        should_stop=should_stop,
        attacks=config.attack_specs,
        worst_case_attacks=config.worst_case_attacks,
        probe=config.sanity_probe,
        inference_layout=config.inference_layout,
    )


def sweep_range(
    loaded: LoadedModel,
    dataset: Dataset,
    config: EvaluationConfig,
    start: int,
    stop: int,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SweepResult:
    """The per-sample part of an evaluation on samples start … stop − 1 (a shard): every attack's outcomes,
    the sanity probes, and the inputs and directions of the gallery samples in the range.

    Its rows are exactly those rows of the whole evaluation's sweep when `start` is a multiple of the batch
    size (services.sharding cuts shards so); progress counts the range's samples.
    """
    setup = prepare(loaded, dataset, config)
    if not 0 <= start < stop <= setup.num_samples:
        raise ValueError(f"samples {start}…{stop - 1} are not a range of the {setup.num_samples} samples")

    def range_progress(stage: str, done: int, total: int) -> None:
        assert progress is not None
        progress(stage, done - start, stop - start)

    with on_device(loaded, setup.device, config.channels_last):
        return _sweep(
            loaded,
            dataset,
            config,
            setup,
            (start, stop),
            [i for i in kept_samples(setup.num_samples, config) if start <= i < stop],
            range_progress if progress else None,
            should_stop,
        )


Audited = tuple[ArchitectureAudit, CAM | GradCAM | None, list[FeatureDepth] | None, float]


def _audit(loaded: LoadedModel, dataset: Dataset, config: EvaluationConfig, setup: Setup) -> Audited:
    """The architecture audit, the CAM extractor and the feature depths it points at, and the seconds taken."""
    started = time.perf_counter()
    audit = ArchitectureAudit.unavailable(dataset.info.input_shape)
    with optional_section("architecture audit", setup.warnings):
        audit = audit_architecture(loaded.network, dataset.info.input_shape, exported=loaded.exported)
    audit_seconds = time.perf_counter() - started
    extractor = None
    if config.cam == "auto":
        with optional_section("CAM audit", setup.warnings):
            extractor = cam_extractor(loaded, audit, config, setup.warnings)
    else:  # a layer the user named: a mistake there is theirs to fix, before any work is done
        extractor = cam_extractor(loaded, audit, config, setup.warnings)
    depths = None
    if config.feature_layers:  # like a CAM layer: the user's to fix before any work is done
        depths = feature_plan(loaded, audit, config, setup.warnings)
    else:
        with optional_section("features at depth", setup.warnings):
            depths = feature_plan(loaded, audit, config, setup.warnings)
    return audit, extractor, depths, audit_seconds


def _conclude(
    loaded: LoadedModel,
    dataset: Dataset,
    config: EvaluationConfig,
    setup: Setup,
    sweep: SweepResult,
    audited: Audited,
    sweep_seconds: float,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
) -> Report:
    """Worst case and sanity checks, escalation, CAM audit and triptychs over the whole sweep (on device)."""
    started = time.perf_counter()
    audit, extractor, depths, audit_seconds = audited
    model, n, num_classes = loaded.module, setup.num_samples, loaded.info.num_classes
    selected, with_cam = sample_choice(n, config, extractor is not None)
    kept = sweep.selected or {}
    sweep.selected = {i: kept[i] for i in selected}  # a merged sweep kept the choice with and without CAM
    assessment = assess(sweep, config, num_classes)
    if _should_escalate(config, assessment.sanity):
        config = _escalate(model, dataset, config, sweep, assessment, setup, should_stop)
        assessment = assess(sweep, config, num_classes)
    cam_started = time.perf_counter()
    cam, pictures, samples = None, [], None
    if selected:
        with frozen_eval(model), optional_section("CAM audit and triptychs", setup.warnings):
            samples = attacked_samples(model, sweep, config.cam_eps, setup.device, config.batch_size)
            pictures = triptychs(samples, config.triptychs)
            if extractor is not None and with_cam.any():
                cam = cam_audit(extractor, model, samples, with_cam, setup.device, config.batch_size)
                if progress:
                    progress("cam", int(with_cam.sum()), int(with_cam.sum()))
    cam_seconds = time.perf_counter() - cam_started
    features = None
    if depths:
        with frozen_eval(loaded.named_module), optional_section("features at depth", setup.warnings):
            features = compute_features(loaded, dataset, depths, config, n, samples, setup.device)
    features_seconds = time.perf_counter() - cam_started - cam_seconds
    device = setup.device
    timing = {
        "seconds": audit_seconds + sweep_seconds + time.perf_counter() - started,
        "sweep_seconds": sweep_seconds,
        "cam_seconds": cam_seconds,
        "features_seconds": features_seconds,
        "audit_seconds": audit_seconds,
        "samples_per_second": n / sweep_seconds if sweep_seconds > 0 else None,
        "inference_layout": sweep.inference_layout,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    first_filters = None
    if audit.layers:
        with optional_section("filter grid", setup.warnings):
            first_filters = filter_weights(loaded.network, audit.layers[0])
    return Report(
        model=loaded.info,
        dataset=dataset.info,
        config=config,
        num_samples=n,
        sweep=sweep,
        architecture=audit,
        cam=cam,
        features=features,
        triptychs=pictures,
        timing=timing,
        warnings=setup.warnings,
        first_filters=first_filters,
        assessment=assessment,
    )


def finish(
    loaded: LoadedModel,
    dataset: Dataset,
    config: EvaluationConfig,
    sweep: SweepResult,
    *,
    sweep_seconds: float,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Report:
    """The finishing part of an evaluation over the merged sweep of all its samples (SweepResult.concat of
    the shards' sweeps, in order): architecture audit, worst case, sanity checks, escalation, CAM audit."""
    setup = prepare(loaded, dataset, config)
    if len(sweep.labels) != setup.num_samples:
        raise ValueError(f"the merged sweep holds {len(sweep.labels)} samples, not {setup.num_samples}")
    audited = _audit(loaded, dataset, config, setup)
    with on_device(loaded, setup.device, config.channels_last):
        return _conclude(loaded, dataset, config, setup, sweep, audited, sweep_seconds, progress, should_stop)


def evaluate(
    loaded: LoadedModel,
    dataset: Dataset,
    config: EvaluationConfig,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Report:
    """The attacks' ε-sweeps (FGSM, targeted FGSM, the iterative and black-box attacks), their worst case and
    sanity checks, the CAM audit and the architecture audit of one model on one dataset.

    With `config.shards` > 1 the shards run here one after another and are merged as a service job's are.
    """
    setup = prepare(loaded, dataset, config)
    n = setup.num_samples
    ranges = shard_ranges(n, shard_count(config.shards, n, config.batch_size, 0), config.batch_size)
    audited = _audit(loaded, dataset, config, setup)
    with on_device(loaded, setup.device, config.channels_last):
        sweep_started = time.perf_counter()
        select = (
            sample_choice(n, config, audited[1] is not None)[0]
            if len(ranges) == 1
            else kept_samples(n, config)
        )
        parts = [
            _sweep(loaded, dataset, config, setup, rows, select, progress, should_stop) for rows in ranges
        ]
        sweep = parts[0] if len(parts) == 1 else SweepResult.concat(parts)
        sweep_seconds = time.perf_counter() - sweep_started
        return _conclude(loaded, dataset, config, setup, sweep, audited, sweep_seconds, progress, should_stop)
