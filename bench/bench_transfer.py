#!/usr/bin/env python
"""The transfer matrix (craft once per source, evaluate on every target) vs the naive per-pair loop.

Workload: the shipped demo models (sources = targets), the digits test split (360 samples, 1×32×32), FGSM and
PGD over an ε grid, CPU.

- matrix: services.transfer.run_transfer with every source and target: per batch, each source crafts its
  examples once per attack and ε, every target classifies them, the batch's examples are dropped;
- naive: for each (source, target) pair, run_transfer of that one pair — the source crafts again for every
  target (what a loop over pairs does).
Rounds alternate the contenders; the ratio of medians is printed, and the script checks that both give the
same per-sample flags for every cell.

    .venv/bin/python bench/bench_transfer.py                       # about 3 minutes on 2 CPU cores
    .venv/bin/python bench/bench_transfer.py --rounds 1 --limit 96  # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.checkpoints import load_model  # noqa: E402
from services.datasets import load_dataset  # noqa: E402
from services.transfer import TransferResult, run_transfer  # noqa: E402
from services.transfer_specs import TransferConfig  # noqa: E402

MODELS = ("gap-cnn", "separable-cnn", "dilated-cnn")


def matrix(models, dataset, config, n) -> tuple[float, TransferResult]:
    started = time.perf_counter()
    result = run_transfer(
        models,
        models,
        dataset.batches(config.batch_size, limit=n),
        num_samples=n,
        eps=config.eps,
        attacks=config.attacks,
        pgd=config.pgd,
        seed=config.seed,
    )
    return time.perf_counter() - started, result


def naive(models, dataset, config, n) -> tuple[float, dict]:
    started = time.perf_counter()
    counts = {}
    for source, source_model in models.items():
        for target, target_model in models.items():
            result = run_transfer(
                {source: source_model},
                {target: target_model},
                dataset.batches(config.batch_size, limit=n),
                num_samples=n,
                eps=config.eps,
                attacks=config.attacks,
                pgd=config.pgd,
                seed=config.seed,
            )
            counts |= result.counts
    return time.perf_counter() - started, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=360)
    parser.add_argument("--eps", default="0,2/255,4/255,8/255,16/255")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_dataset("digits:test")
    n = min(args.limit, len(dataset))
    config = TransferConfig(eps=args.eps, steps=args.steps, batch_size=args.batch_size)
    models = {
        name: load_model(f"demo:{name}", input_shape=dataset.info.input_shape).module for name in MODELS
    }
    times: dict[str, list[float]] = {"matrix": [], "naive": []}
    reference = None
    for _ in range(args.rounds):
        seconds, result = matrix(models, dataset, config, n)
        times["matrix"].append(seconds)
        reference = result
        seconds, counts = naive(models, dataset, config, n)
        times["naive"].append(seconds)
        differing = sum(int((counts[key] != flags).sum()) for key, flags in result.counts.items())
        if differing:
            print(f"MISMATCH: {differing} per-sample flags differ between the matrix and the naive loop")
            return 1
    assert reference is not None
    m, v = statistics.median(times["matrix"]), statistics.median(times["naive"])
    k = len(MODELS)
    print(
        f"{k} sources × {k} targets, N = {n}, ε = {args.eps}, FGSM + PGD-{args.steps}, {args.threads} threads"
    )
    print(
        f"matrix: median {m:.2f} s   naive per-pair loop: median {v:.2f} s   ({args.rounds} alternated rounds)"
    )
    print(
        f"ratio naive / matrix: {v / m:.2f}×   (same per-sample flags in all {len(reference.counts)} (source, target, attack) cells at every ε)"
    )
    largest = max(config.eps)
    for point in reference.points():
        if point.source is None and point.attack == "all" and point.eps == largest:
            print(
                f"  {point.target}: black-box worst case at ε = {largest * 255:g}/255: {point.accuracy:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
