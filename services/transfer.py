"""The transfer matrix: adversarial examples crafted on each source model, evaluated on every target model.

Per batch, each source crafts its examples once per attack and ε (FGSM from its one gradient, PGD at every
ε with the white-box sweep's per-sample seeding); every target then
classifies them in inference mode, and the batch's examples are dropped. Nothing but per-sample flags
outlives a batch.

Definitions, the white-box evaluation's (services.report) applied to the target:
- FGSM: a sample counts at ε when the target classifies the source's example correctly; PGD: when the
  target classifies the clean input and every example crafted at ε′ ≤ ε correctly (the attacker holds
  them all, as the white-box sweep's closure over ε says).
- accuracy = those samples / all samples; attack success rate = among the samples the target classifies
  correctly clean, the fraction that no longer count.
- The diagonal (source = target) is the white-box case: exactly the evaluation's own per-sample outcomes.
- The worst case of a target is per sample over the *other* sources (black-box): a sample counts only if
  no other source's example fooled the target (and, for `all`, no attack's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn

from services.attack_specs import AttackSpec
from services.attacks import fgsm_directions, frozen_eval, perturb
from services.errors import DatasetError, EvaluationCancelled, ModelError
from services.iterative import Forward, gradient_attack
from services.robust import closed_under_eps
from services.sweep import BatchProgress, cancellable_forward
from services.transfer_specs import ALL_ATTACKS


@dataclass(frozen=True)
class TransferPoint:
    """One cell of the matrix at one ε; `source` is None for a target's worst case over the other sources."""

    source: str | None
    target: str
    attack: str
    eps: float
    accuracy: float
    success_rate: float | None  # None when the target classifies no sample correctly clean
    n: int


@dataclass
class TransferResult:
    """Per-sample flags on the CPU: `counts[(source, target, attack)]` is (N, K) bool, `clean[target]` (N,)."""

    eps: tuple[float, ...]
    attacks: tuple[str, ...]
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    clean: dict[str, torch.Tensor]
    counts: dict[tuple[str, str, str], torch.Tensor]

    def worst(self, target: str, attack: str) -> torch.Tensor | None:
        """(N, K) bool: the samples that still count against every other source (None: no other source)."""
        others = [source for source in self.sources if source != target]
        attacks = self.attacks if attack == ALL_ATTACKS else (attack,)
        flags = [self.counts[(source, target, name)] for source in others for name in attacks]
        if not flags:
            return None
        result = flags[0].clone()
        for more in flags[1:]:
            result &= more
        return result

    def _point(
        self, source: str | None, target: str, attack: str, j: int, counted: torch.Tensor
    ) -> TransferPoint:
        clean = self.clean[target]
        n, correct = len(clean), int(clean.sum())
        fooled = int((clean & ~counted[:, j]).sum())
        return TransferPoint(
            source,
            target,
            attack,
            self.eps[j],
            int(counted[:, j].sum()) / n,
            fooled / correct if correct else None,
            n,
        )

    def points(self) -> list[TransferPoint]:
        """Every (source, target, attack, ε) cell, then each target's worst cases over the other sources."""
        cells = [
            self._point(source, target, attack, j, self.counts[(source, target, attack)])
            for source in self.sources
            for target in self.targets
            for attack in self.attacks
            for j in range(len(self.eps))
        ]
        for target in self.targets:
            for attack in (*self.attacks, ALL_ATTACKS):
                worst = self.worst(target, attack)
                if worst is not None:
                    cells += [self._point(None, target, attack, j, worst) for j in range(len(self.eps))]
        return cells


def craft_pgd(
    spec: AttackSpec,
    forward: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: tuple[float, ...],
    candidates: torch.Tensor,
    ids: torch.Tensor,
    seed: int,
    stop_early: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """PGD at every ε on every candidate (the samples the source classifies correctly): (B, K) robust flags on
    the source closed over ε, (B, K) fooled at that ε, and per ε the batch's examples (a sample's last
    iterate: the first that fooled the source, else the final one — the final one always without
    `stop_early`; a non-candidate is its own example).

    Unlike the white-box sweep, a sample fooled at a small ε is attacked again at a larger one: the larger
    budget gives the target a stronger example. Per sample, each attack is the white-box sweep's (seeded by
    sample index and ε), so the closed flags are its outcomes (services.robust: pruning changes none)."""
    fooled = torch.zeros(len(x), len(eps), dtype=torch.bool, device=x.device)
    rows = torch.nonzero(candidates).squeeze(1)
    examples = []
    for j, e in enumerate(eps):
        example = x.clone()
        if e > 0 and len(rows):
            hit, last = gradient_attack(
                spec, forward, x[rows], y[rows], e, ids[rows.cpu()], seed=seed, stop_early=stop_early
            )
            example[rows] = last
            fooled[rows, j] = hit
        examples.append(example)
    robust = closed_under_eps(candidates[:, None] & ~fooled, eps)
    return robust, fooled, examples


def run_transfer(
    sources: Mapping[str, nn.Module],
    targets: Mapping[str, nn.Module],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_samples: int,
    eps: Sequence[float],
    attacks: Sequence[str] = ("fgsm", "pgd"),
    pgd: AttackSpec | None = None,
    pgd_examples: str = "final",
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    seed: int = 0,
    progress: BatchProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TransferResult:
    """The transfer matrix of `sources` × `targets` (models on `device`) over one pass of `batches`.

    A source and a target of the same name are the same model: that cell is the white-box case.
    """
    device, eps, attacks = torch.device(device), tuple(eps), tuple(attacks)
    spec = pgd or AttackSpec("pgd")
    n, k = num_samples, len(eps)
    forwards = {
        name: cancellable_forward(model, device, precision, should_stop)
        for name, model in {**sources, **targets}.items()
    }
    clean = {name: torch.zeros(n, dtype=torch.bool, device=device) for name in targets}
    counts = {
        (s, t, a): torch.zeros(n, k, dtype=torch.bool, device=device)
        for s in sources
        for t in targets
        for a in attacks
    }
    nonfinite = {name: torch.zeros((), dtype=torch.bool, device=device) for name in forwards}
    start = 0
    with ExitStack() as frozen:
        for model in {id(m): m for m in (*sources.values(), *targets.values())}.values():
            frozen.enter_context(frozen_eval(model))
        for x, y in batches:
            if should_stop is not None and should_stop():
                raise EvaluationCancelled("transfer job cancelled")
            stop = start + len(y)
            if stop > n:
                raise DatasetError(f"the dataset yielded more than the {n} samples announced")
            rows = slice(start, stop)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            ids = torch.arange(start, stop)
            with torch.inference_mode():
                clean_logits = {name: forwards[name](x) for name in targets}
            for name, logits in clean_logits.items():
                clean[name][rows] = logits.argmax(dim=1) == y
                nonfinite[name] |= ~torch.isfinite(logits).all()
            for source, model in sources.items():
                logits, direction, _, _ = fgsm_directions(model, x, y, precision=precision)
                nonfinite[source] |= ~torch.isfinite(logits).all()
                crafted: dict[str, list[torch.Tensor]] = {}
                white: dict[str, torch.Tensor] = {}
                if "fgsm" in attacks:  # the sweep's own: x for ε = 0, else one step along the gradient's sign
                    direction = direction.nan_to_num(0.0)
                    crafted["fgsm"] = [x if e == 0 else perturb(x, direction, e) for e in eps]
                if "pgd" in attacks:
                    correct = logits.argmax(dim=1) == y
                    white["pgd"], _, crafted["pgd"] = craft_pgd(
                        spec,
                        forwards[source],
                        x,
                        y,
                        eps,
                        correct,
                        ids,
                        seed,
                        stop_early=pgd_examples != "final",
                    )
                for target in targets:
                    for attack, examples in crafted.items():
                        counts[(source, target, attack)][rows] = _counted(
                            attack,
                            examples,
                            eps,
                            y,
                            forwards[target],
                            clean_logits[target],
                            white,
                            own=logits if target == source else None,
                        )
                del crafted, white  # this batch's examples go: only the flags stay
            start = stop
            if progress is not None:
                progress(start, n)
    if start != n:
        raise DatasetError(f"the dataset yielded {start} samples, {n} were announced")
    bad = sorted(name for name, flag in nonfinite.items() if bool(flag))
    if bad:
        raise ModelError(f"model(s) {', '.join(bad)} produced NaN or infinite logits; check their weights")
    return TransferResult(
        eps=eps,
        attacks=attacks,
        sources=tuple(sources),
        targets=tuple(targets),
        clean={name: flags.cpu() for name, flags in clean.items()},
        counts={key: flags.cpu() for key, flags in counts.items()},
    )


def _counted(
    attack: str,
    examples: list[torch.Tensor],
    eps: tuple[float, ...],
    y: torch.Tensor,
    forward: Forward,
    clean_logits: torch.Tensor,
    white: dict[str, torch.Tensor],
    own: torch.Tensor | None,
) -> torch.Tensor:
    """(B, K): the samples that count for one target against one source's examples of one attack.

    `own`: the source's clean logits from its gradient pass when the target is the source itself (the
    white-box cell, computed exactly as the sweep computes it)."""
    if attack == "pgd" and own is not None:
        return white["pgd"]
    with torch.inference_mode():
        columns = []
        for e, example in zip(eps, examples, strict=True):
            # ε = 0 leaves the input unchanged: the clean prediction (the sweep's from its gradient pass)
            unchanged = own if own is not None else clean_logits
            out = unchanged if e == 0 else forward(example)
            columns.append(out.argmax(dim=1) == y)
        correct_at = torch.stack(columns, dim=1)
    if attack == "fgsm":
        return correct_at
    return closed_under_eps(correct_at, eps) & (clean_logits.argmax(dim=1) == y)[:, None]
