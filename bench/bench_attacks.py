#!/usr/bin/env python
"""PGD over an ε grid, ours vs torchattacks `PGD` run per ε; and what the sanity checks add to a default run.

Workload (the issue's): torchvision ResNet-18 on 3×32×32 inputs, N = 1024, K = 7 ε values (0 … 32/255),
PGD-10 with α = 2.5·ε/10 and a random start, CPU. The network is trained first (a few seeded epochs on the
digits, upsampled to 3×32×32) so its robustness has the shape of a real, undefended classifier's.

- ours: services.sweep.run_sweep with the PGD attack (its FGSM sweep included): per ε only the samples PGD
  has not fooled at a smaller ε, stopped per sample once fooled, with the evaluation's default inference
  layout (the FGSM sweep's ε forwards on a channels_last copy, as `advaudit evaluate` runs them);
- torchattacks: for each ε, `torchattacks.PGD(model, eps, alpha, steps, random_start=True)` on every batch,
  then a forward to count the robust samples (what people write today).
Rounds alternate the contenders; the ratio of medians is reported, with the robust accuracy of both per ε.

Sanity overhead: a default evaluation's sweep (FGSM + PGD-10) with the sanity probes and checks vs without.

    .venv/bin/python bench/bench_attacks.py                    # about 10 minutes on 2 CPU cores
    .venv/bin/python bench/bench_attacks.py --n 256 --rounds 1 # a quick look
    .venv/bin/python bench/bench_attacks.py --threads 1 --epochs 0 --labels own --skip-sanity
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.attack_specs import SanityProbe  # noqa: E402
from services.datasets import digits_split  # noqa: E402
from services.sanity import assess  # noqa: E402
from services.specs import DEFAULT_EPS, EvaluationConfig  # noqa: E402
from services.sweep import SweepResult, run_sweep  # noqa: E402


def digits_rgb(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = (torch.from_numpy(a) for a in digits_split(split))
    return x.expand(-1, 3, -1, -1).contiguous(), y


def trained_resnet18(epochs: int) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    x, y = digits_rgb("train")
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
        for start in range(0, len(y), 64):
            rows = order[start : start + 64]
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
            optimiser.step()
    return model.eval()


def batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def sweep(model, x, y, config, batch_size, with_sanity: bool = False) -> tuple[float, SweepResult]:
    """The engine's sweep as evaluate() runs it (with the sanity probes and checks, or without)."""
    started = time.perf_counter()
    result = run_sweep(
        model,
        batches(x, y, batch_size),
        num_samples=len(y),
        num_classes=10,
        eps=config.eps,
        attacks=config.attack_specs,
        worst_case_attacks=config.worst_case_attacks,
        probe=config.sanity_probe if with_sanity else SanityProbe(0.0, False),
        inference_layout=config.inference_layout,
    )
    if with_sanity:
        assess(result, config, 10)
    return time.perf_counter() - started, result


def ours(model, x, y, config, batch_size) -> tuple[float, list[float]]:
    seconds, result = sweep(model, x, y, config, batch_size)
    assert result.robust is not None
    (matrix,) = result.robust.robust.values()
    return seconds, matrix.float().mean(dim=0).tolist()


def theirs(model, x, y, eps, steps, batch_size) -> tuple[float, list[float]]:
    import torchattacks

    started = time.perf_counter()
    accuracy = []
    for e in eps:
        attack = torchattacks.PGD(model, eps=e, alpha=2.5 * e / steps, steps=steps, random_start=True)
        robust = 0
        for xb, yb in batches(x, y, batch_size):
            adv = attack(xb, yb)
            with torch.no_grad():
                robust += int((model(adv).argmax(dim=1) == yb).sum())
        accuracy.append(robust / len(y))
    return time.perf_counter() - started, accuracy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="alternated timed rounds of each contender")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of the benchmarked network")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-sanity", action="store_true", help="skip the sanity-overhead runs")
    parser.add_argument(
        "--labels",
        choices=("true", "own"),
        default="true",
        help="true: the digits' labels; own: the network's clean predictions (every sample clean-correct, "
        "as bench_engine.py does with a random-init network: --epochs 0 --labels own)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = trained_resnet18(args.epochs)
    for p in model.parameters():
        p.requires_grad_(False)
    xs, ys = (torch.cat(parts) for parts in zip(digits_rgb("test"), digits_rgb("train"), strict=True))
    x, y = xs[: args.n], ys[: args.n]
    if args.labels == "own":
        with torch.no_grad():
            y = model(x).argmax(dim=1)
    eps = DEFAULT_EPS
    config = EvaluationConfig(eps=eps, attacks="pgd", steps=args.steps)
    default = EvaluationConfig()
    with torch.no_grad():
        clean = float((model(x).argmax(dim=1) == y).float().mean())
    print(
        f"ResNet-18 3×32×32, N={args.n}, K={len(eps)}, PGD-{args.steps}, clean accuracy {100 * clean:.1f} %, "
        f"{torch.get_num_threads()} thread(s)"
    )
    ours(model, x[:16], y[:16], config, args.batch_size)  # warm-up: kernels, allocator, imports
    theirs(model, x[:16], y[:16], eps[:2], args.steps, args.batch_size)
    contenders = ["ours", "torchattacks"]
    times: dict[str, list[float]] = {name: [] for name in [*contenders, "sanity", "no sanity"]}
    acc: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        for name in contenders if round_ % 2 == 0 else reversed(contenders):
            if name == "torchattacks":
                seconds, acc[name] = theirs(model, x, y, eps, args.steps, args.batch_size)
            else:
                seconds, acc[name] = ours(model, x, y, config, args.batch_size)
            times[name].append(seconds)
            print(f"  round {round_ + 1} {name}: {seconds:.1f} s", flush=True)
        if args.skip_sanity:
            continue
        for with_sanity in [True, False] if round_ % 2 == 0 else [False, True]:
            name = "sanity" if with_sanity else "no sanity"
            times[name].append(sweep(model, x, y, default, args.batch_size, with_sanity)[0])
            print(f"  round {round_ + 1} default run, {name}: {times[name][-1]:.1f} s", flush=True)
    median = {name: statistics.median(values) for name, values in times.items() if values}
    print("\nε·255       " + " ".join(f"{e * 255:6.0f}" for e in eps))
    for name in contenders:
        print(f"{name:12s}" + " ".join(f"{100 * a:6.1f}" for a in acc[name]))
    differing = [round((a - b) * args.n) for a, b in zip(acc["ours"], acc["torchattacks"], strict=True)]
    print(
        f"robust samples, ours minus torchattacks', per ε: {differing} (negative: ours is the stronger attack); "
        f"torchattacks / ours = {median['torchattacks'] / median['ours']:.2f}× "
        f"({median['torchattacks']:.1f} s vs {median['ours']:.1f} s, medians of {args.rounds})"
    )
    if not args.skip_sanity:
        print(
            f"sanity checks add {100 * (median['sanity'] / median['no sanity'] - 1):.1f} % to a default run's "
            f"sweep ({median['sanity']:.1f} s vs {median['no sanity']:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
