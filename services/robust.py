"""The iterative and black-box attacks of a sweep, batch by batch, with no wasted work, and the sanity probes.

Per attack and sample, ε values are visited in increasing order. A sample that an attack fooled at ε′ is
fooled by it at every ε ≥ ε′ (the same perturbation lies in the larger ball), so it is not attacked again;
a sample misclassified clean is never attacked; and each attack stops on a sample once it is fooled.
This gives exactly the outcomes of running every attack on every sample at every ε and calling a sample
fooled at ε when some ε′ ≤ ε fooled it (tests/services/test_robust.py checks the equality).

The white-box attacks each get their own exact curve (the sanity checks compare them). The black-box
attack runs last and only on the samples that every white-box attack of the worst case left robust at that
ε, as AutoAttack runs its black-box attack: its curve is the worst case after it, and what it adds is
exactly what the white-box attacks missed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace

import torch

from services.attack_specs import BLACK_BOX, AttackSpec, SanityProbe
from services.iterative import Forward, gradient_attack, noise_attack, square_attack


@dataclass
class SanityCounts:
    """Per-sample facts seen during the sweep (CPU tensors of length N)."""

    zero_gradient: torch.Tensor  # the input gradient of the loss is exactly zero
    nonfinite_gradient: torch.Tensor  # it holds a NaN or an infinity
    probability_rows: torch.Tensor  # the outputs lie in [0, 1] and sum to 1: probabilities, not logits
    saturated: (
        torch.Tensor
    )  # the softmax is exactly one-hot in fp32 (the others underflow to 0): no CE gradient
    noise_robust: torch.Tensor | None = None  # still correct under ±ε noise at the largest ε
    large_eps_robust: torch.Tensor | None = None  # survived the white-box attacks at the large ε

    @classmethod
    def concat(cls, parts: Sequence[SanityCounts]) -> SanityCounts:
        """The counts of consecutive sample ranges as one."""
        values = {
            item.name: None
            if getattr(parts[0], item.name) is None
            else torch.cat([getattr(part, item.name) for part in parts])
            for item in fields(cls)
        }
        return cls(**values)  # type: ignore[arg-type]  # every field, a tensor or None as in the parts


def run_attack(
    spec: AttackSpec,
    forward: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    ids: torch.Tensor,
    seed: int,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fooled per sample (bool) for one attack at one ε."""
    if spec.name == "square":
        return square_attack(spec, forward, x, y, eps, ids, seed=seed, targets=targets)
    return gradient_attack(spec, forward, x, y, eps, ids, seed=seed, targets=targets)[0]


def robust_over_eps(
    spec: AttackSpec,
    forward: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: tuple[float, ...],
    candidates: torch.Tensor,
    ids: torch.Tensor,
    seed: int,
    targets: torch.Tensor | None = None,
    still_open: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, K) bool: candidate samples no ε′ ≤ ε fooled, with each sample attacked only while it survives.

    `still_open` (B, K) limits the attack at each ε to the samples other attacks left robust there.
    """
    alive = candidates.clone()
    result = torch.zeros(len(x), len(eps), dtype=torch.bool, device=x.device)
    for j in sorted(range(len(eps)), key=lambda j: eps[j]):
        attack = alive if still_open is None else alive & still_open[:, j]
        if eps[j] > 0 and attack.any():
            rows = torch.nonzero(attack).squeeze(1)
            t = targets[rows] if targets is not None else None
            fooled = run_attack(spec, forward, x[rows], y[rows], eps[j], ids[rows.cpu()], seed, t)
            alive[rows[fooled]] = False
        result[:, j] = alive
    return result


@dataclass
class RobustSweep:
    """Accumulates, batch by batch, each attack's robust-sample matrix and the sanity counts."""

    attacks: tuple[AttackSpec, ...]
    num_samples: int
    eps: tuple[float, ...]
    targeted_eps: tuple[float, ...] = ()
    worst_case_attacks: tuple[str, ...] = ("fgsm", "bim", "pgd", "square")
    seed: int = 0
    probe: SanityProbe = field(default_factory=SanityProbe)
    robust: dict[AttackSpec, torch.Tensor] = field(default_factory=dict)  # (N, K) bool per attack
    targeted_success: dict[AttackSpec, torch.Tensor] = field(default_factory=dict)  # (N, Kt) bool
    counts: SanityCounts | None = None
    first_index: int = 0  # the dataset index of row 0: per-sample draws are seeded by dataset index

    @classmethod
    def concat(cls, parts: Sequence[RobustSweep]) -> RobustSweep:
        """The attacks' outcomes on consecutive sample ranges (each swept with the same attacks) as one."""
        first = parts[0]
        if any(part.attacks != first.attacks for part in parts):
            raise ValueError("robust sweeps of different attacks cannot be merged")
        merged = replace(
            first,
            num_samples=sum(part.num_samples for part in parts),
            robust={},
            targeted_success={},
            counts=None,
            first_index=first.first_index,
        )
        merged.robust = {spec: torch.cat([part.robust[spec] for part in parts]) for spec in first.robust}
        merged.targeted_success = {
            spec: torch.cat([part.targeted_success[spec] for part in parts])
            for spec in first.targeted_success
        }
        counts = [part.counts for part in parts if part.counts is not None]
        merged.counts = SanityCounts.concat(counts) if len(counts) == len(parts) else None
        return merged

    def __post_init__(self) -> None:
        n, k, kt = self.num_samples, len(self.eps), len(self.targeted_eps)
        for spec in self.attacks:
            self.robust[spec] = torch.zeros(n, k, dtype=torch.bool)
            if kt and spec.name != "square":
                self.targeted_success[spec] = torch.zeros(n, kt, dtype=torch.bool)

        def flags() -> torch.Tensor:
            return torch.zeros(n, dtype=torch.bool)

        self.counts = SanityCounts(flags(), flags(), flags(), flags())
        if self.probe.noise and self.eps:
            self.counts.noise_robust = flags()
        if self.probe.large_eps > 0:
            self.counts.large_eps_robust = flags()

    def run_batch(
        self,
        forward: Forward,
        x: torch.Tensor,
        y: torch.Tensor,
        rows: slice,
        clean_logits: torch.Tensor,
        direction: torch.Tensor,
        targets: torch.Tensor | None,
        fgsm_pred: torch.Tensor,
        infer: Forward | None = None,
    ) -> None:
        """Every attack on one batch (x on the device; `fgsm_pred` its (B, K) FGSM predictions), then the
        sanity probes. `direction` is the raw sign of the gradient (NaN where the gradient was NaN); `infer`
        serves the forward-only probes (default: `forward`)."""
        ids = torch.arange(self.first_index + rows.start, self.first_index + rows.stop)
        correct = clean_logits.argmax(dim=1) == y
        white = (
            closed_under_eps(fgsm_pred == y[:, None], self.eps) if "fgsm" in self.worst_case_attacks else None
        )
        for spec in sorted(self.attacks, key=lambda spec: spec.name in BLACK_BOX):
            black = spec.name in BLACK_BOX
            outcome = robust_over_eps(
                spec, forward, x, y, self.eps, correct, ids, self.seed, still_open=white if black else None
            )
            if not black and spec.name in self.worst_case_attacks:
                white = outcome if white is None else white & outcome
            self.robust[spec][rows] = outcome.cpu()
            if spec in self.targeted_success and targets is not None:
                eligible = targets != y
                survived = robust_over_eps(
                    spec, forward, x, y, self.targeted_eps, eligible, ids, self.seed, targets
                )
                self.targeted_success[spec][rows] = (eligible[:, None] & ~survived).cpu()
        self._probe(forward, infer or forward, x, y, rows, ids, clean_logits, direction, correct)

    def _probe(
        self,
        forward: Forward,
        infer: Forward,
        x: torch.Tensor,
        y: torch.Tensor,
        rows: slice,
        ids: torch.Tensor,
        clean_logits: torch.Tensor,
        direction: torch.Tensor,
        correct: torch.Tensor,
    ) -> None:
        counts = self.counts
        assert counts is not None
        flat = direction.flatten(1)
        counts.zero_gradient[rows] = (flat == 0).all(dim=1).cpu()
        counts.nonfinite_gradient[rows] = (~torch.isfinite(flat)).any(dim=1).cpu()
        in_unit = ((clean_logits >= 0) & (clean_logits <= 1)).all(dim=1)
        counts.probability_rows[rows] = (in_unit & ((clean_logits.sum(dim=1) - 1).abs() < 1e-3)).cpu()
        # every other class's probability underflows to exactly 0: the cross-entropy gradient is 0
        counts.saturated[rows] = (
            (clean_logits.softmax(dim=1) == 0).sum(dim=1) == clean_logits.shape[1] - 1
        ).cpu()
        if counts.noise_robust is not None:
            with torch.no_grad():
                fooled = noise_attack(infer, x, y, max(self.eps), ids, seed=self.seed)
            counts.noise_robust[rows] = (correct & ~fooled).cpu()
        if counts.large_eps_robust is not None:
            counts.large_eps_robust[rows] = self._large_eps(forward, x, y, ids, direction, correct).cpu()

    def _large_eps(
        self,
        forward: Forward,
        x: torch.Tensor,
        y: torch.Tensor,
        ids: torch.Tensor,
        direction: torch.Tensor,
        correct: torch.Tensor,
    ) -> torch.Tensor:
        """Survivors of FGSM and the iterative white-box attacks (in L∞) at the large ε."""
        e = self.probe.large_eps
        with torch.no_grad():
            alive: torch.Tensor = correct & ~(
                forward(torch.clamp(x + e * direction.nan_to_num(0), 0, 1)).argmax(dim=1) != y
            )
        for spec in self.attacks:
            if spec.name == "square" or not alive.any():
                continue
            alive &= robust_over_eps(replace(spec, norm="linf"), forward, x, y, (e,), alive, ids, self.seed)[
                :, 0
            ]
        return alive


def closed_under_eps(robust: torch.Tensor, eps: tuple[float, ...]) -> torch.Tensor:
    """(N, K) robust-at-ε flags made monotone: robust at ε only if robust at every swept ε′ ≤ ε."""
    order = sorted(range(len(eps)), key=lambda j: eps[j])
    closed = robust.clone()
    for previous, j in zip(order, order[1:], strict=False):
        closed[:, j] &= closed[:, previous]
    return closed


def robust_matrices(
    fgsm_pred: torch.Tensor,
    labels: torch.Tensor,
    eps: tuple[float, ...],
    robust: RobustSweep | None,
    worst_case_attacks: tuple[str, ...],
) -> dict[str, torch.Tensor]:
    """Per attack name, (N, K) bool: clean-correct samples it did not fool at any ε′ ≤ ε (FGSM included).

    A black-box attack's matrix is the worst case after it: it only attacked the white-box survivors.
    """
    matrices = {"fgsm": closed_under_eps(fgsm_pred == labels[:, None], eps)}
    if robust is None:
        return matrices
    matrices |= {spec.name: outcome for spec, outcome in robust.robust.items() if spec.name not in BLACK_BOX}
    white = [name for name in matrices if name in worst_case_attacks]
    for spec, outcome in robust.robust.items():
        if spec.name in BLACK_BOX:
            matrices[spec.name] = worst_case(matrices, tuple(white)) & outcome if white else outcome
    return matrices


def worst_case(matrices: dict[str, torch.Tensor], names: tuple[str, ...]) -> torch.Tensor:
    """(N, K) bool: robust against every named attack (the per-sample worst case)."""
    result = matrices["fgsm"].clone() if not names else None
    for name in names:
        result = matrices[name].clone() if result is None else result & matrices[name]
    assert result is not None
    return result


def add_black_box(
    robust: RobustSweep,
    spec: AttackSpec,
    forward: Forward,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    correct: torch.Tensor,
    still_open: torch.Tensor,
    device: torch.device,
) -> None:
    """Run a black-box attack after the sweep, on the samples `still_open` (N, K) left robust at each ε."""
    outcome = torch.zeros(robust.num_samples, len(robust.eps), dtype=torch.bool)
    start = 0
    for x, y in batches:
        rows = slice(start, start + len(y))
        x, y = x.to(device), y.to(device)
        ids = torch.arange(robust.first_index + rows.start, robust.first_index + rows.stop)
        candidates = correct[rows].to(device)
        with torch.no_grad():
            result = robust_over_eps(
                spec,
                forward,
                x,
                y,
                robust.eps,
                candidates,
                ids,
                robust.seed,
                still_open=still_open[rows].to(device),
            )
        outcome[rows] = result.cpu()
        start = rows.stop
    robust.attacks = (*robust.attacks, spec)
    robust.robust[spec] = outcome
