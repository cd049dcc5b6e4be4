"""Iterative and black-box attacks on one batch of candidate samples: BIM, PGD (L∞, L2), Square, noise.

Each attack returns, per sample, whether some point it reached fooled the model (untargeted: the arg-max
is not the label; targeted: the arg-max is the target) and stops working on a sample once it is fooled.
All randomness (PGD's start, Square's proposals, the noise) is drawn per sample index and ε from its own
generator, so a sample's outcome depends neither on the batch it is in nor on how a job is split.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from services.attack_specs import SQUARE_P_INIT, AttackSpec

Forward = Callable[[torch.Tensor], torch.Tensor]
"""model(x) → fp32 logits (autocast and cancellation checks inside)."""


def sample_generator(seed: int, stream: int, index: int, eps: float, restart: int = 0) -> torch.Generator:
    """The generator of one sample's draws for one attack stream, ε and restart."""
    key = [seed, stream, index, round(eps * 2**32), restart]
    state = np.random.SeedSequence(key).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> np.uint64(1)))


def per_sample(
    draw: Callable[[torch.Generator], torch.Tensor],
    seed: int,
    stream: int,
    ids: torch.Tensor,
    eps: float,
    restart: int = 0,
) -> torch.Tensor:
    """Stack one draw per sample, each from that sample's own generator (on the CPU)."""
    return torch.stack([draw(sample_generator(seed, stream, int(i), eps, restart)) for i in ids.tolist()])


def fooled_by(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """Success per sample: a wrong class (untargeted) or the target class (targeted)."""
    pred = logits.argmax(dim=1)
    return pred == targets if targets is not None else pred != y


def _margins(logits: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_cls, the largest other logit) per sample."""
    own = logits.gather(1, cls[:, None]).squeeze(1)
    other = logits.scatter(1, cls[:, None], float("-inf")).amax(dim=1)
    return own, other


def attack_loss(
    logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None, loss: str
) -> torch.Tensor:
    """The batch-mean loss the attack ascends (targeted losses are negated, as in the reference attacks)."""
    if loss == "ce":
        return -F.cross_entropy(logits, targets) if targets is not None else F.cross_entropy(logits, y)
    if loss == "cw":
        if targets is None:
            own, other = _margins(logits, y)
            return (other - own).mean()
        own, other = _margins(logits, targets)
        return (own - other).mean()
    # dlr: the margin scaled by the spread of the sorted logits, so it does not vanish with saturation
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    if targets is None:
        own, other = _margins(logits, y)
        return (-(own - other) / (top[:, 0] - top[:, 2] + 1e-12)).mean()
    z_t = logits.gather(1, targets[:, None]).squeeze(1)
    return (-(z_y - z_t) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)).mean()


def _l2(t: torch.Tensor) -> torch.Tensor:
    norms: torch.Tensor = t.flatten(1).norm(p=2, dim=1)
    return norms.view(-1, *([1] * (t.dim() - 1)))


def _start(
    spec: AttackSpec, x: torch.Tensor, eps: float, ids: torch.Tensor, seed: int, restart: int
) -> torch.Tensor:
    if spec.name == "bim":
        return x.clone()
    shape = tuple(x.shape[1:])
    if spec.norm == "linf":
        noise = per_sample(lambda g: torch.rand(shape, generator=g), seed, 0, ids, eps, restart)
        return torch.clamp(x + (noise.to(x.device) * 2 - 1) * eps, 0, 1)
    gauss = per_sample(lambda g: torch.randn(shape, generator=g), seed, 0, ids, eps, restart).to(x.device)
    radius = per_sample(lambda g: torch.rand(1, generator=g), seed, 1, ids, eps, restart).to(x.device)
    delta = gauss * (radius.view(-1, *([1] * len(shape))) / _l2(gauss) * eps)
    return torch.clamp(x + delta, 0, 1)


def _step(
    spec: AttackSpec, adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, eps: float, alpha: float
) -> torch.Tensor:
    """One ascent step and the projection back onto the ε-ball ∩ [0, 1]."""
    if spec.norm == "l2":
        adv = adv + alpha * grad / (_l2(grad) + 1e-10)
        delta = adv - x
        delta = delta * torch.clamp(eps / _l2(delta), max=1.0)
        return torch.clamp(x + delta, 0, 1)
    adv = adv + alpha * grad.sign()
    if spec.name == "bim":  # clip to [x − ε, x + ε] ∩ [0, 1] on the iterate itself
        return torch.clamp(torch.minimum(torch.maximum(adv, torch.clamp(x - eps, min=0)), x + eps), max=1)
    return torch.clamp(x + torch.clamp(adv - x, -eps, eps), 0, 1)


def gradient_attack(
    spec: AttackSpec,
    forward: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    ids: torch.Tensor,
    *,
    seed: int = 0,
    targets: torch.Tensor | None = None,
    stop_early: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BIM or PGD: (fooled per sample, the last iterate per sample).

    With `stop_early`, a sample leaves the batch at the first iterate that fools it (the loss is averaged
    over the samples still attacked; the sign of an L∞ step and the direction of an L2 step do not depend
    on that count). Without it, every sample runs every step, exactly as the reference implementations.
    """
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    last = x.clone()
    alpha = spec.alpha(eps)
    restarts = spec.restarts if spec.name == "pgd" else 1
    for restart in range(restarts):
        rows = torch.nonzero(~fooled).squeeze(1) if stop_early else torch.arange(len(x), device=x.device)
        if len(rows) == 0:
            break
        x0, y0 = x[rows], y[rows]
        t0 = targets[rows] if targets is not None else None
        adv = _start(spec, x0, eps, ids[rows.cpu()], seed, restart)
        for step in range(spec.steps + 1):
            final = step == spec.steps
            adv = adv.detach().requires_grad_(not final)
            with torch.set_grad_enabled(not final):
                logits = forward(adv)
            hit = fooled_by(logits.detach(), y0, t0)
            fooled[rows[hit]] = True
            if final:
                last[rows] = adv.detach()
                break
            keep = ~hit if stop_early else torch.ones_like(hit)
            last[rows[~keep]] = adv.detach()[~keep]
            if not keep.any():
                break
            loss = attack_loss(logits[keep], y0[keep], t0[keep] if t0 is not None else None, spec.loss)
            (grad,) = torch.autograd.grad(loss, adv)
            rows, x0, y0, grad = rows[keep], x0[keep], y0[keep], grad[keep]
            t0 = t0[keep] if t0 is not None else None
            adv = _step(spec, adv.detach()[keep], grad, x0, eps, alpha)
    return fooled, last


def _square_size(spec: AttackSpec, iteration: int, features: int, channels: int, height: int) -> int:
    """Side of the square a proposal changes: the reference schedule, rescaled to the query budget."""
    it = int(iteration / max(spec.queries - 1, 1) * 10_000)
    halvings = sum(it > bound for bound in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
    p = SQUARE_P_INIT / 2**halvings
    return min(max(int(round(math.sqrt(p * features / channels))), 1), height - 1)


def square_attack(
    spec: AttackSpec,
    forward: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    ids: torch.Tensor,
    *,
    seed: int = 0,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Square attack (L∞, score-based): random square updates of ±ε kept when the margin drops.

    `spec.queries` forwards per sample at most (one for the stripe initialisation); a sample stops
    querying once it is fooled.
    """
    b, c, h, w = x.shape
    iterations = max(spec.queries - 1, 0)
    stripes = per_sample(lambda g: torch.randint(0, 2, (c, 1, w), generator=g), seed, 2, ids, eps)
    draws = per_sample(lambda g: torch.rand(iterations, 2 + c, generator=g), seed, 3, ids, eps)
    stripes, draws = stripes.to(x.device, x.dtype) * 2 - 1, draws.to(x.device)
    cls = targets if targets is not None else y

    def margin(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        own, other = _margins(logits, cls[rows])
        return other - own if targets is not None else own - other

    everyone = torch.arange(b, device=x.device)
    best = torch.clamp(x + eps * stripes, 0, 1)
    logits = forward(best)
    best_margin = margin(logits, everyone)
    fooled = fooled_by(logits, y, targets)
    grid_h = torch.arange(h, device=x.device).view(1, 1, h, 1)
    grid_w = torch.arange(w, device=x.device).view(1, 1, 1, w)
    for i in range(iterations):
        rows = torch.nonzero(~fooled).squeeze(1)
        if len(rows) == 0:
            break
        s = _square_size(spec, i, c * h * w, c, h)
        u = draws[rows, i]
        top = (u[:, 0] * (h - s + 1)).long().clamp(max=h - s).view(-1, 1, 1, 1)
        left = (u[:, 1] * (w - s + 1)).long().clamp(max=w - s).view(-1, 1, 1, 1)
        window = (grid_h >= top) & (grid_h < top + s) & (grid_w >= left) & (grid_w < left + s)
        signs = torch.where(u[:, 2:] < 0.5, -1.0, 1.0).to(x.dtype).view(-1, c, 1, 1)
        x0, delta = x[rows], best[rows] - x[rows]
        proposal = torch.clamp(x0 + torch.where(window, eps * signs, delta), 0, 1)
        unchanged = ((proposal - best[rows]).abs() < 1e-7).flatten(1).all(dim=1).view(-1, 1, 1, 1)
        proposal = torch.where(
            unchanged, torch.clamp(x0 + torch.where(window, -eps * signs, delta), 0, 1), proposal
        )
        logits = forward(proposal)
        m = margin(logits, rows)
        better = m < best_margin[rows]
        best[rows[better]] = proposal[better]
        best_margin[rows[better]] = m[better]
        fooled[rows] |= fooled_by(logits, y[rows], targets[rows] if targets is not None else None)
    return fooled


def noise_attack(
    forward: Forward, x: torch.Tensor, y: torch.Tensor, eps: float, ids: torch.Tensor, *, seed: int = 0
) -> torch.Tensor:
    """Random ±ε per pixel (seeded per sample): what a gradient attack must beat."""
    shape = tuple(x.shape[1:])
    signs = per_sample(lambda g: torch.randint(0, 2, shape, generator=g), seed, 4, ids, eps)
    noisy = torch.clamp(x + eps * (signs.to(x.device, x.dtype) * 2 - 1), 0, 1)
    return fooled_by(forward(noisy), y, None)
