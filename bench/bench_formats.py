#!/usr/bin/env python
"""Does every checkpoint format run the sweep as fast as the same network in eager mode?

One torchvision network (ResNet-18 by default) is saved as TorchScript, as a torch.export archive (.pt2) and as
safetensors weights, and each file is loaded with `services.checkpoints.load_model` as the worker loads it. The
engine's sweep (`services.sweep.run_sweep`: one forward+backward per batch, then one forward per ε) then runs on
each, and on the eager network itself, interleaved round by round (the order rotates). Reported: the median time
of each format and its ratio to eager; the target is every ratio ≤ 1.05. The predictions of every format are
checked to be identical to eager's. "torch.export named" is the unflattened view of the archive, which only the
CAM audit runs (its hooks need the layer names); it is shown for reference.

    .venv/bin/python bench/bench_formats.py                 # CPU: ResNet-18, 3×32×32, N = 256, batch 64
    .venv/bin/python bench/bench_formats.py --rounds 7 --n 512

Writes bench/results/formats-<device>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import safetensors.torch
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/bench_formats.py` works without an installed package

from services.checkpoints import load_model  # noqa: E402
from services.sweep import run_sweep  # noqa: E402

TARGET = 1.05
EPS = tuple(k / 255 for k in (0, 1, 2, 4, 8, 16, 32))


def save_formats(network: torch.nn.Module, sample: torch.Tensor, folder: Path) -> dict[str, Path]:
    paths = {
        "torchscript": folder / "net.pt",
        "torch.export": folder / "net.pt2",
        "safetensors": folder / "net.safetensors",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(network), str(paths["torchscript"]))
    program = torch.export.export(network, (sample,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, paths["torch.export"])
    safetensors.torch.save_file(network.state_dict(), paths["safetensors"])
    return paths


def sweep_once(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, classes: int):
    batches = [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)]
    started = time.perf_counter()
    result = run_sweep(module, batches, num_samples=len(y), num_classes=classes, eps=EPS)
    return time.perf_counter() - started, result.pred


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    classes, shape = 10, (3, args.size, args.size)
    network = torchvision.models.get_model(args.arch, num_classes=classes).eval()
    x = torch.rand(args.n, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = network(x[: args.batch_size]).argmax(1).repeat(args.n // args.batch_size + 1)[: args.n]

    with tempfile.TemporaryDirectory() as tmp:
        paths = save_formats(network, x[:4], Path(tmp))
        modules = {"eager": network}
        for name, path in paths.items():
            options = {"arch": args.arch, "num_classes": classes} if name == "safetensors" else {}
            loaded = load_model(path, input_shape=shape, **options)
            modules[name] = loaded.module
            if loaded.hookable is not None:  # what the sweep ran before: for reference, not a target
                modules[f"{name} named"] = loaded.named_module

    times: dict[str, list[float]] = {name: [] for name in modules}
    reference = None
    for name, module in modules.items():  # one warm-up each; every format must predict what eager predicts
        _, pred = sweep_once(module, x, y, args.batch_size, classes)
        reference = pred if reference is None else reference
        if not torch.equal(pred, reference):
            print(f"{name}: predictions differ from eager's in {int((pred != reference).sum())} places")
            return 1
    names = list(modules)
    for round_index in range(args.rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            times[name].append(sweep_once(modules[name], x, y, args.batch_size, classes)[0])

    eager = statistics.median(times["eager"])
    rows = {
        name: {
            "median_s": statistics.median(values),
            "ratio_to_eager": statistics.median(values) / eager,
            "runs_s": values,
        }
        for name, values in times.items()
    }
    print(
        f"{args.arch} {shape}, N={args.n}, batch {args.batch_size}, K={len(EPS)}, "
        f"{torch.get_num_threads()} threads, {args.rounds} alternated rounds (median)"
    )
    print(f"{'format':<20}{'sweep s':>10}{'vs eager':>10}")
    for name, row in rows.items():
        print(f"{name:<20}{row['median_s']:>10.3f}{row['ratio_to_eager']:>9.3f}×")
    worst = max(
        row["ratio_to_eager"] for name, row in rows.items() if name != "eager" and "named" not in name
    )
    verdict = "met" if worst <= TARGET else "MISSED"
    print(f"slowest format: {worst:.3f}× eager (target ≤ {TARGET}): {verdict}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "formats-cpu.json").write_text(
        json.dumps({"args": vars(args), "formats": rows, "target": TARGET, "worst_ratio": worst}, indent=2)
    )
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
