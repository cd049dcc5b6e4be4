"""What features at depth cost: the default demo evaluation (`advaudit demo`'s options, the three demo models on
the digits test split) with `features auto` against `features none`, alternated, in one process.

  python bench/bench_features.py --repeats 5

Each repeat runs every demo model once with and once without features (the order alternates per repeat, so
warm-up and drift fall on both), timing evaluate() alone (loading and writing the report folder excluded,
though the feature pictures' few milliseconds are timed apart and added). Printed: the median seconds of
each, their ratio, and the features' own median seconds (report timing.features_seconds) per model.
Not a test: figures are printed and written to bench/results/features.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from services.checkpoints import load_model  # noqa: E402
from services.datasets import load_dataset  # noqa: E402
from services.evaluation import evaluate  # noqa: E402
from services.specs import DEFAULT_EPS, EvaluationConfig  # noqa: E402
from services.zoo import DEMO_MODELS  # noqa: E402


def _run(loaded, dataset, features: str) -> tuple[float, float]:
    """Seconds of one evaluation (plus drawing its feature pictures), and the features' own share of them."""
    config = EvaluationConfig(eps=DEFAULT_EPS, targeted="next", cam="auto", device="cpu", features=features)
    started = time.perf_counter()
    report = evaluate(loaded, dataset, config)
    seconds = time.perf_counter() - started
    if report.features is None:
        return seconds, 0.0
    with tempfile.TemporaryDirectory() as folder:
        drawn = time.perf_counter()
        report.write_feature_files(Path(folder), report.features)
        drawing = time.perf_counter() - drawn
    return seconds + drawing, report.timing["features_seconds"] + drawing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = load_dataset("digits")
    models = {name: load_model(f"demo:{name}", input_shape=dataset.info.input_shape) for name in DEMO_MODELS}
    for loaded in models.values():  # warm-up: first-call costs (allocations, oneDNN kernels) fall on neither
        _run(loaded, dataset, "none")
    totals: dict[str, list[float]] = {"auto": [], "none": []}
    own: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(args.repeats):
        order = ("auto", "none") if repeat % 2 == 0 else ("none", "auto")
        for mode in order:
            total = 0.0
            for name, loaded in models.items():
                seconds, feature_seconds = _run(loaded, dataset, mode)
                total += seconds
                if mode == "auto":
                    own[name].append(feature_seconds)
            totals[mode].append(total)
    with_features, without = statistics.median(totals["auto"]), statistics.median(totals["none"])
    result = {
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "samples": len(dataset),
        "demo_seconds_with_features": with_features,
        "demo_seconds_without_features": without,
        "ratio": with_features / without,
        "feature_seconds_per_model": {name: statistics.median(values) for name, values in own.items()},
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "features.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
