#!/usr/bin/env python
"""How much faster is the architecture audit of an eager module with hooks than with torch.export?

`services.architecture.audit_architecture(model, shape, walker=...)` runs on one torchvision network (ResNet-18,
random init, seed 0, eval mode) at 3×32×32, alternating walker="hooks" and walker="torch.export" round by round
(the order flips each round), after one warm-up of each. Reported: each median, export / hooks, and whether the
two tables are identical (they must be).

    .venv/bin/python bench/bench_architecture.py              # CPU, 9 rounds, a few seconds
    .venv/bin/python bench/bench_architecture.py --arch mobilenet_v3_small --size 64 --rounds 15
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/bench_architecture.py` works without an installed package

from services.architecture import audit_architecture  # noqa: E402

WALKERS = ("hooks", "torch.export")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.arch, num_classes=10).eval()
    shape = (3, args.size, args.size)
    audits = {walker: audit_architecture(model, shape, walker=walker) for walker in WALKERS}  # warm-up
    times: dict[str, list[float]] = {walker: [] for walker in WALKERS}
    for round_ in range(args.rounds):
        for walker in WALKERS if round_ % 2 == 0 else WALKERS[::-1]:
            started = time.perf_counter()
            audit_architecture(model, shape, walker=walker)
            times[walker].append(time.perf_counter() - started)
    hooks, export = (audits[walker] for walker in WALKERS)
    identical = (hooks.layers, hooks.totals, hooks.cam_head) == (
        export.layers,
        export.totals,
        export.cam_head,
    )
    medians = {walker: statistics.median(values) for walker, values in times.items()}
    print(
        f"{args.arch} 3×{args.size}×{args.size}, {args.rounds} alternated rounds, torch {torch.__version__}"
    )
    for walker in WALKERS:
        spread = max(times[walker]) - min(times[walker])
        print(f"  {walker:12s} median {medians[walker] * 1000:8.1f} ms  (spread {spread * 1000:.1f} ms)")
    print(
        f"  export / hooks: {medians['torch.export'] / medians['hooks']:.1f}×   identical tables: {identical}"
    )
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
