"""The report: in-memory results, their report.json form (schema_version 3) and the artifact files.

Version 2 added `attacks` (every attack's curve), `robust` (the per-sample worst case over the attacks),
`sanity` and `summary.worst_case_accuracy`; version 3 added `features` (features at depth). Version 1
documents (FGSM only) and version 2 ones are still read everywhere.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch

from services import feature_sheets, metrics, plots
from services.architecture import ArchitectureAudit
from services.attack_specs import FGSM_ENTRY
from services.checkpoints import ModelInfo
from services.dataset_types import DatasetInfo
from services.feature_types import Features
from services.filter_grid import render_filter_grid
from services.sanity import Assessment, assess
from services.specs import EvaluationConfig
from services.sweep import SweepResult

SCHEMA_VERSION = 3


@dataclass
class CamAudit:
    """Clean vs adversarial class-activation maps for a sample of images, with drift metrics."""

    method: str
    layer: str
    eps: float
    indices: np.ndarray
    labels: np.ndarray
    clean: np.ndarray  # (M, H, W) float32 in [0, 1]
    adversarial: np.ndarray
    clean_class: np.ndarray
    adversarial_class: np.ndarray
    clean_confidence: np.ndarray
    adversarial_confidence: np.ndarray
    similarity: np.ndarray  # Pearson correlation per image
    top20_iou: np.ndarray
    confidence_drop: np.ndarray  # faithfulness of the clean map
    images: np.ndarray  # (M, C, H, W) clean inputs
    adversarial_images: np.ndarray

    def drift(self) -> float | None:
        """1 − mean Pearson correlation of clean and adversarial maps (images with a constant map left out)."""
        mean = _nanmean(self.similarity)
        return None if mean is None else 1.0 - mean

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "layer": self.layer,
            "eps": self.eps,
            "num_samples": len(self.indices),
            "mean_similarity": _nanmean(self.similarity),
            "mean_top20_iou": _nanmean(self.top20_iou),
            "mean_confidence_drop": _nanmean(self.confidence_drop),
            "drift": self.drift(),
            "constant_maps": int(np.isnan(self.similarity).sum()),
            "flipped": int(np.sum(self.clean_class != self.adversarial_class)),
            "samples": [
                {
                    "index": int(self.indices[i]),
                    "label": int(self.labels[i]),
                    "clean_class": int(self.clean_class[i]),
                    "clean_confidence": float(self.clean_confidence[i]),
                    "adversarial_class": int(self.adversarial_class[i]),
                    "adversarial_confidence": float(self.adversarial_confidence[i]),
                    "similarity": float(self.similarity[i]),
                    "top20_iou": float(self.top20_iou[i]),
                    "confidence_drop": float(self.confidence_drop[i]),
                }
                for i in range(len(self.indices))
            ],
        }


@dataclass
class Triptych:
    """Clean image + ε·sign(∇) = adversarial image, with classes and confidences."""

    index: int
    label: int
    eps: float
    clean: np.ndarray  # (C, H, W)
    perturbation: np.ndarray  # sign of the gradient, (C, H, W) in {-1, 0, 1}
    adversarial: np.ndarray
    clean_class: int
    clean_confidence: float
    adversarial_class: int
    adversarial_confidence: float


@dataclass
class Report:
    """Everything one evaluation produced."""

    model: ModelInfo
    dataset: DatasetInfo
    config: EvaluationConfig
    num_samples: int
    sweep: SweepResult
    architecture: ArchitectureAudit
    cam: CamAudit | None = None
    features: Features | None = None
    triptychs: list[Triptych] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    first_filters: tuple[torch.Tensor, str] | None = (
        None  # (weight (out, in, k, k), title) of the first conv layer
    )
    skipped_figures: set[str] = field(default_factory=set)  # figures that failed to render (see warnings)
    assessment: Assessment | None = None  # worst case and sanity checks; computed from the sweep if not given

    def __post_init__(self) -> None:
        if self.assessment is None:
            self.assessment = assess(self.sweep, self.config, self.model.num_classes)

    def class_name(self, index: int) -> str:
        names = self.dataset.class_names
        return names[index] if names and 0 <= index < len(names) else str(index)

    def to_dict(self) -> dict[str, Any]:
        """The report.json document."""
        s = self.sweep
        acc = metrics.accuracy_per_eps(s.pred, s.labels)
        success = metrics.attack_success_rate(s.pred, s.clean_pred, s.labels)
        min_eps = metrics.minimal_eps(s.pred, s.labels, s.eps, s.clean_pred)
        clean_accuracy = metrics.accuracy(s.clean_pred, s.labels)
        fgsm: list[dict[str, Any]] = [
            {
                "eps": e,
                "eps_255": e * 255,
                "accuracy": a,
                "attack_success_rate": r,
                "mean_confidence": float(s.conf[:, j].mean()),
            }
            for j, (e, a, r) in enumerate(zip(s.eps, acc, success, strict=True))
        ]
        targeted: dict[str, Any] | None = None
        summary: dict[str, Any] = {
            "clean_accuracy": clean_accuracy,
            "robust_auc": metrics.robust_auc(s.eps, acc),
            "min_accuracy": min(acc),
            "minimal_eps": metrics.minimal_eps_summary(min_eps, (s.clean_pred == s.labels).numpy(), s.eps),
        }
        if s.policy is not None:
            assert s.targeted_pred is not None and s.targets is not None and s.target_prob is not None
            t_acc = metrics.accuracy_per_eps(s.targeted_pred, s.labels)
            t_success = metrics.target_success_rate(s.targeted_pred, s.targets, s.labels)
            targeted = {
                "policy": str(s.policy),
                "points": [
                    {
                        "eps": e,
                        "eps_255": e * 255,
                        "accuracy": a,
                        "target_success_rate": t,
                        "mean_target_probability": float(s.target_prob[:, j].mean()),
                    }
                    for j, (e, a, t) in enumerate(zip(s.targeted_eps, t_acc, t_success, strict=True))
                ],
            }
            summary["targeted_auc"] = metrics.robust_auc(s.targeted_eps, t_acc)
            summary["max_target_success_rate"] = max(
                (t for t in t_success if not math.isnan(t)), default=None
            )
        assessment = self.assessment
        assert assessment is not None
        worst_acc = assessment.worst.float().mean(dim=0).tolist()
        summary["worst_case_accuracy"] = worst_acc
        summary["worst_case_auc"] = metrics.robust_auc(s.eps, worst_acc)
        summary["worst_case_attacks"] = list(assessment.worst_case_attacks)
        summary["sanity_verdict"] = assessment.sanity["verdict"]
        if self.cam is not None:
            summary["cam_drift"] = self.cam.drift()
        summary["macs"] = self.architecture.totals.get("macs")
        summary["params"] = self.architecture.totals.get("params")
        per_class = metrics.per_class_accuracy(s.pred, s.clean_pred, s.labels, self.model.num_classes)
        for row in per_class:
            row["name"] = self.class_name(row["class"])
        document = {
            "schema_version": SCHEMA_VERSION,
            "model": self.model.to_dict(),
            "dataset": {
                **self.dataset.to_dict(),
                "num_samples": self.num_samples,
                "available_samples": self.dataset.num_samples,
            },
            "config": self.config.to_dict(),
            "clean": {"accuracy": clean_accuracy, "mean_confidence": float(s.clean_conf.mean())},
            "fgsm": fgsm,
            "targeted_fgsm": targeted,
            "attacks": self._attack_entries(fgsm, targeted),
            "robust": {
                "attacks": list(assessment.worst_case_attacks),
                "points": [
                    {"eps": e, "eps_255": e * 255, "accuracy": a}
                    for e, a in zip(s.eps, worst_acc, strict=True)
                ],
            },
            "sanity": assessment.sanity,
            "gradcam": self.cam.summary() if self.cam is not None else None,
            "features": self.features.to_dict() if self.features is not None else None,
            "architecture": self.architecture.to_dict(),
            "per_class": per_class,
            "summary": summary,
            "timing": self.timing,
            "warnings": self.warnings,
            "artifacts": [name for name in self.artifact_names() if name not in self.skipped_figures],
        }
        return json_safe(document)

    def _attack_entries(
        self, fgsm: list[dict[str, Any]], targeted: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        """One entry per attack and mode: its settings and its points per ε."""
        s, assessment = self.sweep, self.assessment
        assert assessment is not None
        correct = s.clean_pred == s.labels
        entries = [FGSM_ENTRY | {"targeted": False, "points": [_point(p) for p in fgsm]}]
        if targeted is not None:
            entries.append(
                FGSM_ENTRY | {"targeted": True, "points": [_target_point(p) for p in targeted["points"]]}
            )
        robust = s.robust
        for spec in robust.attacks if robust is not None else ():
            matrix = assessment.matrices[spec.name]
            points = []
            for j, e in enumerate(s.eps):
                fooled = int((correct & ~matrix[:, j]).sum())
                points.append(
                    {
                        "eps": e,
                        "eps_255": e * 255,
                        "accuracy": float(matrix[:, j].float().mean()),
                        "attack_success_rate": fooled / int(correct.sum()) if correct.any() else None,
                    }
                )
            entries.append(spec.describe() | {"targeted": False, "points": points})
            if robust is not None and spec in robust.targeted_success and s.targets is not None:
                success = robust.targeted_success[spec]
                eligible = int((s.targets != s.labels).sum())
                points = [
                    {
                        "eps": e,
                        "eps_255": e * 255,
                        "target_success_rate": float(success[:, j].sum()) / eligible if eligible else None,
                    }
                    for j, e in enumerate(s.targeted_eps)
                ]
                entries.append(spec.describe() | {"targeted": True, "points": points})
        return entries

    def artifact_names(self) -> list[str]:
        names = ["report.json", "outcomes.npz", "accuracy_curve.png"]
        if self.first_filters is not None:
            names.append("filters.png")
        if self.cam is not None:
            names += ["gradcam.npz", "cam_gallery.png"]
        if self.features is not None:
            names += ["features.npz", *feature_sheets.depth_sheet_names(self.features)]
            if feature_sheets.has_shift(self.features):
                names.append("features_under_attack.png")
        names += [f"triptych_{i}.png" for i in range(len(self.triptychs))]
        if self.config.save_adversarial:
            names.append("adversarial.npz")
        return names

    def write(self, out_dir: str | Path) -> Path:
        """Write report.json and every artifact into `out_dir`; returns the report.json path.

        Files are written to a hidden sibling folder first and moved in at the end (report.json last),
        so a failure leaves no half-written report behind.
        """
        out = Path(out_dir)
        staging = out.parent / f".{out.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            self._write_files(staging)
            out.mkdir(parents=True, exist_ok=True)
            for stale in out.iterdir():  # files of an earlier report in the same folder would mislead
                if stale.is_file() and _is_report_file(stale.name):
                    stale.unlink()
            names = sorted(p.name for p in staging.iterdir())
            for name in sorted(names, key=lambda n: n == "report.json"):
                os.replace(staging / name, out / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return out / "report.json"

    def _figure(self, path: Path, draw: Callable[[Path], object]) -> None:
        """Draw one figure; a figure that fails is left out with a warning (the numbers do not depend on it).

        An OSError is not the figure's fault (a full disk): it fails the write, which leaves nothing behind.
        """
        try:
            draw(path)
        except OSError:
            raise
        except Exception as error:
            path.unlink(missing_ok=True)
            self.skipped_figures.add(path.name)
            self.warnings.append(f"{path.name} skipped: {error}")

    def _write_files(self, out: Path) -> None:
        document = self.to_dict()
        self._write_outcomes(out / "outcomes.npz")
        self._figure(out / "accuracy_curve.png", lambda path: plots.accuracy_curve(document, path))
        if self.cam is not None:
            c = self.cam
            np.savez_compressed(
                out / "gradcam.npz",
                indices=c.indices,
                clean=c.clean.astype(np.float32),
                adversarial=c.adversarial.astype(np.float32),
                clean_class=c.clean_class,
                adversarial_class=c.adversarial_class,
                labels=c.labels,
                similarity=c.similarity,
                top20_iou=c.top20_iou,
                confidence_drop=c.confidence_drop,
                # the inputs each map belongs to, so a viewer can draw the maps over them
                images=c.images.astype(np.float32),
                adversarial_images=c.adversarial_images.astype(np.float32),
            )
            self._figure(out / "cam_gallery.png", lambda path: plots.cam_gallery(c, self.class_name, path))
        if self.features is not None:
            self.write_feature_files(out, self.features)
        for i, triptych in enumerate(self.triptychs):
            self._figure(
                out / f"triptych_{i}.png", functools.partial(plots.triptych, triptych, self.class_name)
            )
        if self.first_filters is not None:
            weight, title = self.first_filters
            self._figure(out / "filters.png", lambda path: render_filter_grid(weight, title, path))
        if self.config.save_adversarial:
            self._write_adversarial(out / "adversarial.npz")
        if self.skipped_figures:  # the document names the figures that are really there, and says why not
            document = self.to_dict()
        (out / "report.json").write_text(json.dumps(document, indent=2))

    def write_feature_files(self, out: Path, features: Features) -> None:
        """features.npz, one patch sheet per depth and the depth-under-attack plot (figures as _figure draws)."""
        np.savez_compressed(out / "features.npz", allow_pickle=False, **features.arrays())
        for depth, name in zip(features.depths, feature_sheets.depth_sheet_names(features), strict=True):
            note = (
                f"top {features.patches_per_channel} patches of {features.scanned_samples} samples "
                "(#sample  activation) · channels of the largest dataset mean"
            )
            self._figure(out / name, functools.partial(feature_sheets.depth_sheet, depth, note))
        if feature_sheets.has_shift(features):
            drift = self.cam.drift() if self.cam is not None else None
            self._figure(
                out / "features_under_attack.png",
                functools.partial(feature_sheets.shift_plot, features, drift),
            )

    def _write_outcomes(self, path: Path) -> None:
        s = self.sweep
        arrays = {
            "labels": s.labels.numpy(),
            "clean_pred": s.clean_pred.numpy(),
            "clean_conf": s.clean_conf.numpy(),
            "eps": np.asarray(s.eps),
            "pred": s.pred.numpy(),
            "conf": s.conf.numpy(),
            "minimal_eps": metrics.minimal_eps(s.pred, s.labels, s.eps, s.clean_pred),
        }
        assessment = self.assessment
        assert assessment is not None
        arrays["worst_case_robust"] = assessment.worst.numpy()
        for name, matrix in assessment.matrices.items():
            arrays[f"robust_{name}"] = matrix.numpy()
        if s.policy is not None:
            assert s.targets is not None and s.targeted_pred is not None and s.target_prob is not None
            arrays |= {
                "targets": s.targets.numpy(),
                "targeted_eps": np.asarray(s.targeted_eps),
                "targeted_pred": s.targeted_pred.numpy(),
                "target_prob": s.target_prob.numpy(),
            }
        np.savez_compressed(path, allow_pickle=True, **arrays)  # numpy's default, named for the stubs

    def _write_adversarial(self, path: Path) -> None:
        """float32 adversarial inputs per ε, written one array at a time to bound memory."""
        s = self.sweep
        assert s.inputs is not None and s.directions is not None, "save_adversarial keeps the directions"
        x = s.inputs.numpy()
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:

            def put(name: str, array: np.ndarray) -> None:
                with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                    np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)

            put("eps", np.asarray(s.eps, dtype=np.float64))
            put("labels", s.labels.numpy())
            put("clean", x)
            direction = s.directions.numpy().astype(np.float32)
            for j, e in enumerate(s.eps):
                put(f"fgsm_{j}", np.clip(x + np.float32(e) * direction, 0, 1).astype(np.float32))
            if s.policy is not None:
                assert s.targets is not None and s.targeted_directions is not None
                put("targeted_eps", np.asarray(s.targeted_eps, dtype=np.float64))
                put("targets", s.targets.numpy())
                t_direction = s.targeted_directions.numpy().astype(np.float32)
                for j, e in enumerate(s.targeted_eps):
                    put(f"targeted_{j}", np.clip(x + np.float32(e) * t_direction, 0, 1).astype(np.float32))


REPORT_FILES = (
    "report.json",
    "outcomes.npz",
    "gradcam.npz",
    "adversarial.npz",
    "accuracy_curve.png",
    "cam_gallery.png",
    "filters.png",
    "features.npz",
    "features_under_attack.png",
)


def _is_report_file(name: str) -> bool:
    numbered = name.startswith(("triptych_", "features_depth_")) and name.endswith(".png")
    return name in REPORT_FILES or numbered


def _point(fgsm_point: dict[str, Any]) -> dict[str, Any]:
    keys = ("eps", "eps_255", "accuracy", "attack_success_rate")
    return {key: fgsm_point[key] for key in keys}


def _target_point(point: dict[str, Any]) -> dict[str, Any]:
    return {key: point[key] for key in ("eps", "eps_255", "target_success_rate")}


def _nanmean(values: np.ndarray) -> float | None:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if len(finite) else None


@overload
def json_safe(value: dict[str, Any]) -> dict[str, Any]: ...
@overload
def json_safe(value: object) -> object: ...
def json_safe(value: object) -> object:
    """Replace NaN/inf with None and numpy scalars with Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
