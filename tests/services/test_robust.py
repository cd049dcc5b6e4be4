"""No wasted work, exactly: pruning over ε and stopping per sample change no outcome; the worst case."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from services.attack_specs import AttackSpec
from services.iterative import gradient_attack, square_attack
from services.robust import RobustSweep, closed_under_eps, robust_matrices, worst_case


def tiny_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    ).double()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def brute_force(spec, model, x, y, eps, seed):
    """Every clean-correct sample attacked at every ε with every step; fooled at ε if some ε′ ≤ ε fooled it."""
    forward = lambda a: model(a)  # noqa: E731
    correct = model(x).argmax(dim=1) == y
    ids = torch.arange(len(y))
    robust = torch.zeros(len(y), len(eps), dtype=torch.bool)
    for j, e in enumerate(eps):
        if e == 0:
            fooled = torch.zeros(len(y), dtype=torch.bool)
        elif spec.name == "square":
            fooled = square_attack(spec, forward, x, y, e, ids, seed=seed)
        else:
            fooled = gradient_attack(spec, forward, x, y, e, ids, seed=seed, stop_early=False)[0]
        robust[:, j] = correct & ~fooled
    return closed_under_eps(robust, eps)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    eps=st.lists(st.sampled_from([0.0, 0.01, 0.03, 0.05, 0.1, 0.2]), min_size=1, max_size=4, unique=True),
    batch=st.integers(1, 12),
    attack=st.sampled_from(["bim", "pgd", "pgd-l2", "pgd-dlr", "square"]),
)
def test_pruning_and_early_stopping_change_no_outcome(seed, eps, batch, attack):
    spec = {
        "bim": AttackSpec("bim", steps=4),
        "pgd": AttackSpec("pgd", steps=4, restarts=2),
        "pgd-l2": AttackSpec("pgd", norm="l2", steps=4),
        "pgd-dlr": AttackSpec("pgd", loss="dlr", steps=4),
        "square": AttackSpec("square", queries=15),
    }[attack]
    model = tiny_model(seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(12, 1, 6, 6, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # clean-correct by construction, except where we flip some labels
    y[::5] = (y[::5] + 1) % 3
    eps = tuple(eps)
    sweep = RobustSweep((spec,), len(y), eps, worst_case_attacks=(spec.name,), seed=seed)
    for start in range(0, len(y), batch):
        rows = slice(start, min(start + batch, len(y)))
        xb, yb = x[rows], y[rows]
        with torch.no_grad():
            logits = model(xb)
        sweep.run_batch(
            model, xb, yb, rows, logits, torch.zeros_like(xb), None, torch.zeros(len(yb), len(eps))
        )
    assert torch.equal(sweep.robust[spec], brute_force(spec, model, x, y, eps, seed))


def test_closed_under_eps_follows_the_eps_order_not_the_column_order():
    robust = torch.tensor([[True, False, True], [False, True, True]])
    # ε list 0.1, 0.3, 0.2: robust at 0.3 needs robust at 0.1 and 0.2
    closed = closed_under_eps(robust, (0.1, 0.3, 0.2))
    assert closed.tolist() == [[True, False, True], [False, False, False]]


def test_worst_case_is_robust_against_every_attack():
    labels = torch.tensor([0, 1, 2])
    fgsm_pred = torch.tensor([[0, 0], [1, 1], [2, 0]])  # sample 2 fooled by FGSM at the 2nd ε
    sweep = RobustSweep((AttackSpec("pgd"),), 3, (0.0, 0.1), worst_case_attacks=("fgsm", "pgd"))
    sweep.robust[AttackSpec("pgd")] = torch.tensor([[True, True], [True, False], [True, True]])
    matrices = robust_matrices(fgsm_pred, labels, (0.0, 0.1), sweep, ("fgsm", "pgd"))
    worst = worst_case(matrices, ("fgsm", "pgd"))
    assert worst.tolist() == [[True, True], [True, False], [True, False]]
    assert worst_case(matrices, ("fgsm",)).tolist() == [[True, True], [True, True], [True, False]]
