"""Metrics derived from per-sample outcomes, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from services import metrics

LABELS = torch.tensor([0, 1, 2, 3])
CLEAN = torch.tensor([0, 1, 2, 0])  # sample 3 is wrong from the start
PRED = torch.tensor([[0, 0, 1], [1, 2, 2], [2, 2, 2], [0, 0, 0]])  # columns: ε = 0, 0.1, 0.2


def test_accuracy_and_attack_success():
    assert metrics.accuracy_per_eps(PRED, LABELS) == [0.75, 0.5, 0.25]
    # Among the three clean-correct samples: fooled 0, 1, 2 of them.
    assert metrics.attack_success_rate(PRED, CLEAN, LABELS) == pytest.approx([0.0, 1 / 3, 2 / 3])
    assert all(math.isnan(v) for v in metrics.attack_success_rate(PRED, torch.tensor([1, 0, 0, 0]), LABELS))


def test_target_success_excludes_samples_whose_label_is_the_target():
    targets = torch.tensor([1, 1, 1, 1])  # sample 1 already has label 1: excluded
    predicted = torch.tensor([[1, 0], [1, 1], [0, 1], [3, 3]])
    assert metrics.target_success_rate(predicted, targets, LABELS) == pytest.approx([1 / 3, 1 / 3])


def test_minimal_eps_uses_the_first_failing_eps_in_ascending_order():
    eps = (0.2, 0.05, 0.1)  # unsorted on purpose, and without 0
    pred = torch.tensor([[1, 0, 0], [2, 1, 2], [2, 2, 2], [0, 0, 0]])  # sample 0 fooled only at 0.2
    result = metrics.minimal_eps(pred, LABELS, eps, CLEAN)
    # sample 3 is wrong on the clean input: 0, not the smallest swept ε.
    assert result.tolist() == [0.2, 0.1, math.inf, 0.0]
    summary = metrics.minimal_eps_summary(result, (CLEAN == LABELS).numpy(), eps)
    assert summary["fooled"] == 2 and summary["never_fooled"] == 1 and summary["clean_errors"] == 1
    assert summary["median"] == pytest.approx(0.2)  # median of [0.2, 0.1, inf]
    assert summary["mean_fooled"] == pytest.approx(0.15)
    assert summary["histogram"] == {"eps": [0.05, 0.1, 0.2], "counts": [0, 1, 1]}


def test_robust_auc_trapezoid_normalised_by_the_range():
    # Trapezoids: (0.1)(1.0+0.5)/2 + (0.2)(0.5+0.0)/2 = 0.075 + 0.05 = 0.125, over a range of 0.3.
    assert metrics.robust_auc([0.0, 0.1, 0.3], [1.0, 0.5, 0.0]) == pytest.approx(0.125 / 0.3)
    assert metrics.robust_auc([0.3, 0.0, 0.1], [0.0, 1.0, 0.5]) == pytest.approx(0.125 / 0.3)
    assert metrics.robust_auc([0.05], [0.7]) == pytest.approx(0.7)


def test_per_class_accuracy():
    rows = metrics.per_class_accuracy(PRED, CLEAN, LABELS, num_classes=5)
    assert [r["class"] for r in rows] == [0, 1, 2, 3]  # class 4 has no sample
    assert rows[1] == {"class": 1, "count": 1, "clean_accuracy": 1.0, "accuracy": [1.0, 0.0, 0.0]}
    assert rows[3]["clean_accuracy"] == 0.0
    assert np.isclose(rows[0]["accuracy"], [1.0, 1.0, 0.0]).all()
