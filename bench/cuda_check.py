"""End-to-end check of `evaluate` on CUDA: every demo model, fp32 and bf16 + channels_last, against the CPU.

Not a test (CI has no GPU): run it on a CUDA machine with `python bench/cuda_check.py --out DIR`.
It exits non-zero when an fp32 CUDA accuracy differs from the CPU one by more than --tolerance percentage
points; bf16 differences are reported (bf16 legitimately moves samples that sit near a decision boundary).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from services.checkpoints import load_model  # noqa: E402
from services.datasets import load_dataset  # noqa: E402
from services.evaluation import evaluate  # noqa: E402
from services.specs import EvaluationConfig  # noqa: E402
from services.zoo import DEMO_MODELS  # noqa: E402


def run(name: str, dataset, out: Path, **options) -> dict:
    device = options.get("device", "cpu")
    loaded = load_model(f"demo:{name}", input_shape=dataset.info.input_shape, device=device)
    config = EvaluationConfig(targeted="random", save_adversarial=True, **options)
    started = time.perf_counter()
    report = evaluate(loaded, dataset, config)
    if device != "cpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tag = f"{name}-{device}-{config.precision}{'-cl' if config.channels_last else ''}"
    report.write(out / tag)
    document = report.to_dict()
    return {"tag": tag, "seconds": seconds, "document": document}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "cuda-check"))
    parser.add_argument(
        "--tolerance", type=float, default=1.0, help="largest fp32 accuracy difference, in pp"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("CUDA is not available here")
        return 2
    out = Path(args.out)
    dataset = load_dataset("digits")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    failures, rows = [], []
    for name in DEMO_MODELS:
        cpu = run(name, dataset, out, device="cpu")
        for options in ({"device": "cuda"}, {"device": "cuda", "precision": "bf16", "channels_last": True}):
            gpu = run(name, dataset, out, **options)
            worst = max(
                abs(a["accuracy"] - b["accuracy"]) * 100
                for a, b in zip(cpu["document"]["fgsm"], gpu["document"]["fgsm"], strict=True)
            )
            t_worst = max(
                abs(a["target_success_rate"] - b["target_success_rate"]) * 100
                for a, b in zip(
                    cpu["document"]["targeted_fgsm"]["points"],
                    gpu["document"]["targeted_fgsm"]["points"],
                    strict=True,
                )
            )
            cam = gpu["document"]["gradcam"]
            rows.append(
                {
                    "run": gpu["tag"],
                    "cpu_s": cpu["seconds"],
                    "cuda_s": gpu["seconds"],
                    "max_acc_diff_pp": worst,
                    "max_target_diff_pp": t_worst,
                    "cam": f"{cam['method']}@{cam['layer']}",
                    "cam_drift": cam["drift"],
                    "warnings": gpu["document"]["warnings"],
                }
            )
            if "precision" not in options and max(worst, t_worst) > args.tolerance:
                failures.append(gpu["tag"])
    for row in rows:
        print(json.dumps(row))
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    print("FAILED: " + ", ".join(failures) if failures else "fp32 CUDA runs agree with the CPU")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
