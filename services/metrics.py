"""Robustness metrics derived from per-sample × ε outcomes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of predictions equal to the labels (NaN for no samples)."""
    return float((pred == labels).float().mean()) if len(labels) else math.nan


def accuracy_per_eps(pred: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Accuracy at each ε column of an (N, K) prediction matrix."""
    return (pred == labels[:, None]).float().mean(dim=0).tolist()


def attack_success_rate(pred: torch.Tensor, clean_pred: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Per ε: among clean-correct samples, the fraction misclassified (NaN when none is clean-correct)."""
    clean_correct = clean_pred == labels
    if not clean_correct.any():
        return [math.nan] * pred.shape[1]
    fooled = pred[clean_correct] != labels[clean_correct][:, None]
    return fooled.float().mean(dim=0).tolist()


def target_success_rate(
    targeted_pred: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor
) -> list[float]:
    """Per ε: among samples whose label differs from their target, the fraction predicted as the target."""
    eligible = labels != targets
    if not eligible.any():
        return [math.nan] * targeted_pred.shape[1]
    hit = targeted_pred[eligible] == targets[eligible][:, None]
    return hit.float().mean(dim=0).tolist()


def minimal_eps(
    pred: torch.Tensor, labels: torch.Tensor, eps: Sequence[float], clean_pred: torch.Tensor
) -> np.ndarray:
    """Per sample, the smallest swept ε at which it is misclassified: 0 if the clean input already is,
    inf when no swept ε fools it. A sample correct again at a larger ε still counts as fooled at the first.
    """
    order = np.argsort(np.asarray(eps, dtype=np.float64), kind="stable")
    sorted_eps = np.asarray(eps, dtype=np.float64)[order]
    wrong = (pred != labels[:, None]).numpy()[:, order]
    result = np.full(len(labels), np.inf)
    any_wrong = wrong.any(axis=1)
    result[any_wrong] = sorted_eps[wrong[any_wrong].argmax(axis=1)]
    result[(clean_pred != labels).numpy()] = 0.0
    return result


def robust_auc(eps: Sequence[float], accuracies: Sequence[float]) -> float:
    """Area under the accuracy–ε curve (trapezoid over the ε range), divided by that range."""
    pairs = sorted(zip(eps, accuracies, strict=True))
    xs = np.array([p[0] for p in pairs], dtype=np.float64)
    ys = np.array([p[1] for p in pairs], dtype=np.float64)
    if len(xs) == 1 or xs[-1] == xs[0]:
        return float(ys.mean())
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))
    return area / float(xs[-1] - xs[0])


def per_class_accuracy(
    pred: torch.Tensor, clean_pred: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> list[dict[str, Any]]:
    """Per class present in the labels: sample count, clean accuracy and accuracy at each ε."""
    rows = []
    for c in range(num_classes):
        mask = labels == c
        count = int(mask.sum())
        if count == 0:
            continue
        rows.append(
            {
                "class": c,
                "count": count,
                "clean_accuracy": accuracy(clean_pred[mask], labels[mask]),
                "accuracy": accuracy_per_eps(pred[mask], labels[mask]),
            }
        )
    return rows


def minimal_eps_summary(
    values: np.ndarray, clean_correct: np.ndarray, eps: Sequence[float]
) -> dict[str, Any]:
    """Minimal-ε statistics over clean-correct samples, and how many of them each swept ε fools first."""
    attacked = values[clean_correct]
    fooled = attacked[np.isfinite(attacked)]
    swept = sorted({float(e) for e in eps})
    median = float(np.median(attacked)) if len(attacked) else math.nan
    return {
        "median": median if math.isfinite(median) else None,
        "mean_fooled": float(fooled.mean()) if len(fooled) else None,
        "fooled": int(len(fooled)),
        "never_fooled": int(len(attacked) - len(fooled)),
        "clean_errors": int(len(values) - len(attacked)),
        "histogram": {"eps": swept, "counts": [int(np.sum(fooled == e)) for e in swept]},
    }
