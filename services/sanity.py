"""Automatic sanity checks of a robustness evaluation (Carlini et al. 2019; AutoAttack's flags).

Each check compares what the attacks found with what must hold for an honest evaluation; a model that
masks its gradients (shattered, vanishing or saturated gradients, probability outputs) fails at least one.
The verdict is `suspicious` when any check fails. Thresholds are evaluation options (services.specs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from services.robust import RobustSweep, SanityCounts, closed_under_eps, robust_matrices, worst_case
from services.specs import EvaluationConfig, format_eps
from services.sweep import SweepResult


@dataclass(frozen=True)
class Check:
    """One sanity check: its report name, its title and what a failure means."""

    name: str
    title: str
    meaning: str
    masking: bool = True  # a failure points at masked gradients (not merely at a weak attack)


CHECKS = (
    Check(
        "iterative_beats_single_step",
        "Iterative beats single-step",
        "an iterative attack left samples robust that one FGSM step fools: its gradient steps lead nowhere, "
        "typical of masked or shattered gradients",
    ),
    Check(
        "monotone_in_eps",
        "Monotone in ε",
        "accuracy rose with ε although a larger ball contains every smaller perturbation: the attack is "
        "not finding what exists",
    ),
    Check(
        "large_eps_reaches_chance",
        "Large ε reaches chance",
        "at a huge ε the image can be replaced by another class's, yet the white-box attacks stayed above "
        "chance: their gradients are not usable",
    ),
    Check(
        "white_box_beats_black_box",
        "White-box beats black-box",
        "a gradient-free attack fooled samples the white-box attacks could not: the gradients are masked",
        masking=False,  # Square has run already when this fails
    ),
    Check(
        "gradient_beats_noise",
        "Gradient attacks beat noise",
        "random ±ε noise fooled more samples than FGSM: the gradient direction is worse than chance",
    ),
    Check(
        "gradients_usable",
        "Gradients are usable",
        "the input gradient is zero, NaN or infinite for many samples: gradient attacks cannot work, so "
        "their accuracy says nothing about robustness",
    ),
    Check(
        "outputs_are_logits",
        "Outputs are logits",
        "the model outputs probabilities or saturated scores, so the cross-entropy gradient vanishes; "
        "give the attacks the logits",
    ),
    Check(
        "untargeted_beats_targeted",
        "Untargeted beats targeted",
        "a targeted attack fooled samples the untargeted attacks did not, although any target is a wrong "
        "class: the untargeted attacks are too weak",
        masking=False,
    ),
)
CHECKS_BY_NAME = {check.name: check for check in CHECKS}


def _result(name: str, status: str, detail: str) -> dict[str, str]:
    return {"name": name, "status": status, "detail": detail}


def _share(count: int, n: int) -> str:
    return f"{count} sample{'s' if count != 1 else ''} ({100 * count / max(n, 1):.1f} %)"


def _worst_contradiction(
    contradicting: torch.Tensor, eps: tuple[float, ...], n: int, tolerance: float, name: str, what: str
) -> dict[str, str]:
    """Fail when, at some ε, more than `tolerance`·N samples contradict the expected ordering."""
    counts = contradicting.sum(dim=0)
    j = int(counts.argmax())
    worst = int(counts[j])
    if worst > tolerance * n:
        return _result(name, "failed", f"at ε = {format_eps(eps[j])}, {_share(worst, n)} {what}")
    return _result(name, "passed", f"at most {_share(worst, n)} {what} at any ε (tolerance {tolerance:g})")


def run_checks(
    *,
    config: EvaluationConfig,
    num_classes: int,
    labels: torch.Tensor,
    clean_pred: torch.Tensor,
    fgsm_pred: torch.Tensor,
    eps: tuple[float, ...],
    matrices: dict[str, torch.Tensor],
    worst: torch.Tensor,
    robust: RobustSweep | None,
    targeted_eps: tuple[float, ...] = (),
    targets: torch.Tensor | None = None,
    targeted_pred: torch.Tensor | None = None,
) -> dict[str, Any]:
    """The report's `sanity` section: {"verdict", "checks": [{"name", "status", "detail"}]}."""
    n, tol = len(labels), config.sanity_tolerance
    linf = config.norm == "linf"
    counts = robust.counts if robust is not None else None
    names = set(matrices)
    checks = []

    iterative = [name for name in ("bim", "pgd") if name in names]
    if not iterative or not linf:
        checks.append(_skip("iterative_beats_single_step", "needs bim or pgd in L∞"))
    else:
        iterative_robust = worst_case(matrices, tuple(iterative))
        contradicting = ~matrices["fgsm"] & iterative_robust & (clean_pred == labels)[:, None]
        checks.append(
            _worst_contradiction(
                contradicting,
                eps,
                n,
                tol,
                "iterative_beats_single_step",
                f"fooled by FGSM resisted {', '.join(iterative)}",
            )
        )

    checks.append(_monotone(fgsm_pred, labels, eps, n, tol))
    checks.append(_chance(config, counts, num_classes, n))

    white = [name for name in ("fgsm", "bim", "pgd") if name in names and name in config.attacks]
    if "square" not in names or not white:
        checks.append(_skip("white_box_beats_black_box", "needs square and a white-box attack"))
    else:
        contradicting = (
            ~matrices["square"] & worst_case(matrices, tuple(white)) & (clean_pred == labels)[:, None]
        )
        checks.append(
            _worst_contradiction(
                contradicting,
                eps,
                n,
                tol,
                "white_box_beats_black_box",
                f"fooled by square resisted {', '.join(white)}",
            )
        )

    checks.append(_noise(counts, fgsm_pred, labels, eps, n, tol))
    checks.append(_gradients(counts, n, config.sanity_gradient_fraction))
    checks.append(_logits(counts, n, config.sanity_gradient_fraction))
    checks.append(_targeted(worst, eps, targeted_eps, targets, targeted_pred, labels, robust, n, tol))
    verdict = "suspicious" if any(check["status"] == "failed" for check in checks) else "passed"
    return {"verdict": verdict, "checks": checks}


def _skip(name: str, why: str) -> dict[str, str]:
    return _result(name, "skipped", why)


def _monotone(
    fgsm_pred: torch.Tensor, labels: torch.Tensor, eps: tuple[float, ...], n: int, tol: float
) -> dict[str, str]:
    order = sorted(range(len(eps)), key=lambda j: eps[j])
    accuracy = (fgsm_pred == labels[:, None]).float().mean(dim=0)
    best_rise, at = 0.0, order[0]
    for low, high in zip(order, order[1:], strict=False):
        rise = float(accuracy[high] - accuracy[low])
        if rise > best_rise:
            best_rise, at = rise, high
    if best_rise > tol:
        return _result(
            "monotone_in_eps",
            "failed",
            f"FGSM accuracy rises by {100 * best_rise:.1f} points up to ε = {format_eps(eps[at])}",
        )
    return _result(
        "monotone_in_eps", "passed", f"FGSM accuracy never rises by more than {100 * tol:g} points"
    )


def _chance(
    config: EvaluationConfig, counts: SanityCounts | None, num_classes: int, n: int
) -> dict[str, str]:
    name = "large_eps_reaches_chance"
    if not {"bim", "pgd"} & set(config.attacks):
        return _skip(name, "needs bim or pgd: one FGSM step at a huge ε need not reach chance")
    if counts is None or counts.large_eps_robust is None:
        return _skip(name, "sanity ε is 0")
    accuracy = float(counts.large_eps_robust.float().mean())
    ceiling = 1 / num_classes + config.sanity_chance_margin
    detail = (
        f"white-box accuracy at ε = {format_eps(config.sanity_eps)} is {100 * accuracy:.1f} % "
        f"(chance {100 / num_classes:.1f} %, allowed up to {100 * ceiling:.1f} %)"
    )
    return _result(name, "failed" if accuracy > ceiling else "passed", detail)


def _noise(
    counts: SanityCounts | None,
    fgsm_pred: torch.Tensor,
    labels: torch.Tensor,
    eps: tuple[float, ...],
    n: int,
    tol: float,
) -> dict[str, str]:
    name = "gradient_beats_noise"
    if counts is None or counts.noise_robust is None or not eps:
        return _skip(name, "needs the L∞ sweep")
    j = max(range(len(eps)), key=lambda j: eps[j])
    noise_acc = float(counts.noise_robust.float().mean())
    fgsm_acc = float((fgsm_pred[:, j] == labels).float().mean())
    detail = f"at ε = {format_eps(eps[j])}: accuracy {100 * noise_acc:.1f} % under noise, {100 * fgsm_acc:.1f} % under FGSM"
    return _result(name, "failed" if noise_acc < fgsm_acc - tol else "passed", detail)


def _gradients(counts: SanityCounts | None, n: int, limit: float) -> dict[str, str]:
    name = "gradients_usable"
    if counts is None:
        return _skip(name, "no gradient was measured")
    zero, bad = int(counts.zero_gradient.sum()), int(counts.nonfinite_gradient.sum())
    detail = f"{_share(zero, n)} with a zero input gradient, {_share(bad, n)} with NaN or infinity"
    return _result(name, "failed" if zero + bad > limit * n else "passed", detail)


def _logits(counts: SanityCounts | None, n: int, limit: float) -> dict[str, str]:
    name = "outputs_are_logits"
    if counts is None:
        return _skip(name, "no output was measured")
    probability, saturated = int(counts.probability_rows.sum()), int(counts.saturated.sum())
    if probability > (1 - limit) * n:
        return _result(
            name, "failed", f"{_share(probability, n)} output rows lie in [0, 1] and sum to 1: probabilities"
        )
    detail = f"{_share(saturated, n)} with saturated outputs (softmax exactly one-hot, zero loss gradient)"
    return _result(name, "failed" if saturated > limit * n else "passed", detail)


def _targeted(
    worst: torch.Tensor,
    eps: tuple[float, ...],
    targeted_eps: tuple[float, ...],
    targets: torch.Tensor | None,
    targeted_pred: torch.Tensor | None,
    labels: torch.Tensor,
    robust: RobustSweep | None,
    n: int,
    tol: float,
) -> dict[str, str]:
    name = "untargeted_beats_targeted"
    shared = [e for e in targeted_eps if e in eps]
    if targets is None or targeted_pred is None or not shared:
        return _skip(name, "needs a targeted attack at an ε of the main list")
    success = (targeted_pred == targets[:, None]) & (targets != labels)[:, None]
    if robust is not None:
        for outcome in robust.targeted_success.values():
            success |= outcome
    success = ~closed_under_eps(~success, targeted_eps)
    columns = [eps.index(e) for e in shared]
    contradicting = success[:, [targeted_eps.index(e) for e in shared]] & worst[:, columns]
    return _worst_contradiction(
        contradicting, tuple(shared), n, tol, name, "hit their target but resisted every untargeted attack"
    )


@dataclass
class Assessment:
    """The per-attack robust matrices, their per-sample worst case and the sanity section of one sweep."""

    matrices: dict[str, torch.Tensor]  # attack name → (N, K) bool, monotone in ε
    worst_case_attacks: tuple[str, ...]
    worst: torch.Tensor  # (N, K) bool: robust against every attack of the worst case
    sanity: dict[str, Any]


def assess(sweep: SweepResult, config: EvaluationConfig, num_classes: int) -> Assessment:
    """Worst case per sample over the configured attacks, and every sanity check."""
    matrices = robust_matrices(sweep.pred, sweep.labels, sweep.eps, sweep.robust, config.worst_case_attacks)
    names = tuple(name for name in config.worst_case_attacks if name in matrices) or ("fgsm",)
    worst = worst_case(matrices, names)
    sanity = run_checks(
        config=config,
        num_classes=num_classes,
        labels=sweep.labels,
        clean_pred=sweep.clean_pred,
        fgsm_pred=sweep.pred,
        eps=sweep.eps,
        matrices=matrices,
        worst=worst,
        robust=sweep.robust,
        targeted_eps=sweep.targeted_eps,
        targets=sweep.targets,
        targeted_pred=sweep.targeted_pred,
    )
    return Assessment(matrices, names, worst, sanity)
