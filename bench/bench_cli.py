#!/usr/bin/env python
"""Whole processes, as users run them: how fast the CLI answers, and `advaudit evaluate` against torchattacks.

1. `advaudit --help` and `advaudit jobs list` against a running `advaudit serve` (on a scratch data
   directory): wall time of each whole process, median of `--runs`. Target: ≤ 0.5 s each.
2. `advaudit evaluate` (defaults but the ε list, `--attacks fgsm` and `--features none`: the attack the peer
   script runs, without the features at depth that later issues added; with the CAM audit, architecture audit,
   sanity checks and report folder) on a ResNet-18 (safetensors + --arch), 3×32×32, N = 1024, K = 10, against a
   whole-process script that loads the same weights and data and runs torchattacks' FGSM once per ε with an
   evaluation, as people do today. Target: ours ≥ 2.5× faster. Beside them, two more whole processes: the same
   evaluate with its default `--features auto` (what the features at depth cost), and the *floor*: a script that
   imports what both need (torch, torchvision), loads the same weights and data and runs only the passes the
   engine cannot skip (per batch one forward+backward, then one forward per nonzero ε on a channels_last copy),
   nothing else — what any implementation of the one-gradient sweep pays as a whole process. All four are
   alternated; the best of `--rounds` runs of each is compared.

    .venv/bin/python bench/bench_cli.py               # a few minutes on 2 cores
    .venv/bin/python bench/bench_cli.py --skip-evaluate --runs 20

Writes bench/results/cli.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ADVAUDIT = str(BIN / "advaudit") if (BIN / "advaudit").exists() else shutil.which("advaudit") or "advaudit"
EPS = [k / 255 for k in (0, 1, 2, 3, 4, 6, 8, 10, 12, 16)]  # K = 10

TORCHATTACKS_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, torch, torchattacks, torchvision
    from safetensors.torch import load_file
    weights, data, eps = sys.argv[1], sys.argv[2], [float(e) for e in sys.argv[3].split(",")]
    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(load_file(weights))
    model.eval()
    arrays = np.load(data)
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    correct = [0] * len(eps)
    for start in range(0, len(y), 128):
        xb, yb = x[start:start + 128], y[start:start + 128]
        for j, e in enumerate(eps):
            adv = torchattacks.FGSM(model, eps=e)(xb, yb)
            with torch.no_grad():
                correct[j] += int((model(adv).argmax(1) == yb).sum())
    print([c / len(y) for c in correct])
""")


FLOOR_SCRIPT = textwrap.dedent("""
    import copy, sys
    import numpy as np, torch, torchvision
    from safetensors.torch import load_file
    weights, data, eps = sys.argv[1], sys.argv[2], [float(e) for e in sys.argv[3].split(",")]
    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(load_file(weights))
    model.eval().requires_grad_(False)
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    arrays = np.load(data)
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    correct = [0] * len(eps)
    for start in range(0, len(y), 128):
        xb, yb = x[start:start + 128].clone().requires_grad_(True), y[start:start + 128]
        logits = model(xb)
        torch.nn.functional.cross_entropy(logits, yb).backward()
        sign = xb.grad.sign()
        with torch.inference_mode():
            for j, e in enumerate(eps):
                out = logits if e == 0 else fast(torch.clamp(xb + e * sign, 0, 1).contiguous(
                    memory_format=torch.channels_last))
                correct[j] += int((out.argmax(1) == yb).sum())
    print([c / len(y) for c in correct])
""")


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli_latency(runs: int, folder: Path) -> dict:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADVAUDIT_")}
    server = subprocess.Popen(
        [ADVAUDIT, "serve", "--port", str(port), "--data-dir", str(folder / "data"), "--no-worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while (
            subprocess.run(
                [ADVAUDIT, "jobs", "list", "--server", url], env=env, capture_output=True
            ).returncode
            != 0
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("advaudit serve did not answer")
            time.sleep(0.5)
        results = {"help": [], "jobs_list": []}
        for _ in range(runs):  # alternated
            results["help"].append(timed([ADVAUDIT, "--help"], env))
            results["jobs_list"].append(timed([ADVAUDIT, "jobs", "list", "--server", url], env))
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        name: {"median_s": statistics.median(values), "runs_s": values} for name, values in results.items()
    }


def evaluate_vs_torchattacks(rounds: int, folder: Path, n: int) -> dict:
    import numpy as np
    import safetensors.torch
    import torch
    import torchvision

    torch.manual_seed(0)
    network = torchvision.models.resnet18(num_classes=10).eval()
    safetensors.torch.save_file(network.state_dict(), folder / "resnet18.safetensors")
    rng = np.random.default_rng(0)
    x = rng.random((n, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():  # labels: the model's own predictions, so accuracy curves have a shape
        y = torch.cat([network(torch.from_numpy(x[i : i + 256])).argmax(1) for i in range(0, n, 256)]).numpy()
    np.savez(folder / "data.npz", x=x, y=y.astype(np.int64))
    (folder / "torchattacks_fgsm.py").write_text(TORCHATTACKS_SCRIPT)
    (folder / "floor.py").write_text(FLOOR_SCRIPT)
    eps = ",".join(f"{e:.10g}" for e in EPS)
    ours = [
        ADVAUDIT,
        "evaluate",
        "--model",
        str(folder / "resnet18.safetensors"),
        "--arch",
        "resnet18",
        "--num-classes",
        "10",
        "--dataset",
        str(folder / "data.npz"),
        "--out",
        str(folder / "report"),
        "--eps",
        eps,
        "--attacks",
        "fgsm",
        "--features",
        "none",
    ]
    with_features = [*ours[:-2], "--features", "auto"]
    theirs = [
        sys.executable,
        str(folder / "torchattacks_fgsm.py"),
        str(folder / "resnet18.safetensors"),
        str(folder / "data.npz"),
        eps,
    ]
    floor = [sys.executable, str(folder / "floor.py"), *theirs[2:]]
    order = [
        ("advaudit_evaluate", ours),
        ("torchattacks_loop", theirs),
        ("floor", floor),
        ("advaudit_evaluate_features", with_features),
    ]
    times: dict[str, list[float]] = {name: [] for name, _ in order}
    for index in range(rounds):
        for name, command in order if index % 2 == 0 else reversed(order):
            times[name].append(timed(command))
    best = {name: min(values) for name, values in times.items()}
    return {
        "runs_s": times,
        "best_s": best,
        "speedup": best["torchattacks_loop"] / best["advaudit_evaluate"],
        "floor_speedup": best["torchattacks_loop"] / best["floor"],
        "features_cost": best["advaudit_evaluate_features"] / best["advaudit_evaluate"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="CLI runs of each command")
    parser.add_argument("--rounds", type=int, default=3, help="whole-process evaluate rounds of each side")
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--skip-evaluate", action="store_true")
    args = parser.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results["cli"] = cli_latency(args.runs, folder)
        for name, row in results["cli"].items():
            print(
                f"advaudit {name.replace('_', ' ')}: median {row['median_s']:.3f} s over {args.runs} runs "
                f"(target ≤ 0.5 s)"
            )
        if not args.skip_evaluate:
            results["evaluate"] = row = evaluate_vs_torchattacks(args.rounds, folder, args.n)
            print(
                f"whole process, ResNet-18 3×32×32, N={args.n}, K={len(EPS)}, best of {args.rounds}: advaudit "
                f"evaluate {row['best_s']['advaudit_evaluate']:.2f} s, torchattacks per-ε loop "
                f"{row['best_s']['torchattacks_loop']:.2f} s: {row['speedup']:.2f}× faster (target ≥ 2.5×); "
                f"the floor {row['best_s']['floor']:.2f} s: {row['floor_speedup']:.2f}× faster than the loop, "
                f"ours at {row['best_s']['advaudit_evaluate'] / row['best_s']['floor']:.2f}× the floor; with "
                f"--features auto {row['best_s']['advaudit_evaluate_features']:.2f} s "
                f"({row['features_cost']:.2f}× the run without)"
            )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
