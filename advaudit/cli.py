"""The `advaudit` command: evaluate a model locally, or run the demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from advaudit.console import comparison_table, console, progress_bar, summary_table
from services.checkpoints import load_model
from services.datasets import load_dataset
from services.errors import AdvauditError, ConfigError
from services.evaluation import evaluate, resolve_device
from services.specs import DEFAULT_CAM_EPS, DEFAULT_EPS, EvaluationConfig, parse_eps_list, parse_eps_value
from services.zoo import DEMO_MODELS


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _add_evaluate(commands) -> None:
    p = commands.add_parser("evaluate", help="evaluate one model on one dataset and write a report folder")
    p.add_argument("--model", required=True, help="checkpoint (.pt2, TorchScript, .safetensors, .pt/.pth) or demo:NAME")
    p.add_argument("--dataset", required=True, help="digits, an .npz file, or an ImageFolder directory or .zip")
    p.add_argument("--out", required=True, help="report folder to write")
    p.add_argument("--eps", default=None, help="ε list in [0, 1], fractions allowed (default 0,1/255,…,32/255)")
    p.add_argument("--targeted", default=None, help="targeted FGSM policy: class:K, random, least-likely or next")
    p.add_argument("--targeted-eps", default=None, help="ε list for the targeted sweep (default: --eps)")
    p.add_argument("--cam", default="auto", help="auto, none, or a layer path for Grad-CAM (e.g. features.6)")
    p.add_argument("--cam-eps", default=str(DEFAULT_CAM_EPS), help="ε of the adversarial CAMs (default 8/255)")
    p.add_argument("--cam-samples", type=int, default=16, help="images in the CAM gallery (default 16)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (CUDA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", default=None, help="architecture for weights-only checkpoints")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--mean", type=_floats, default=None, help="per-channel mean the model expects, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", type=_floats, default=None, help="per-channel std the model expects")
    p.add_argument("--image-size", type=int, default=None, help="resize ImageFolder images to this square size")
    p.add_argument("--save-adversarial", action="store_true", help="also write adversarial.npz (float32, lossless)")


def _config(args) -> EvaluationConfig:
    return EvaluationConfig(
        eps=parse_eps_list(args.eps) if args.eps else DEFAULT_EPS,
        targeted=args.targeted, targeted_eps=parse_eps_list(args.targeted_eps) if args.targeted_eps else None,
        cam=args.cam, cam_eps=parse_eps_value(args.cam_eps), cam_samples=args.cam_samples, limit=args.limit,
        batch_size=args.batch_size, device=args.device, precision=args.precision,
        channels_last=args.channels_last, seed=args.seed, save_adversarial=args.save_adversarial,
    )


def run_evaluation(model: str, dataset_source: str, out: Path, config: EvaluationConfig, *, arch=None,
                   num_classes=None, mean=None, std=None, image_size=None, label: str | None = None) -> dict:
    """Load, evaluate with a progress bar, write the report folder; returns the report document."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the report")
    dataset = load_dataset(dataset_source, image_size=image_size)
    device = resolve_device(config.device)
    loaded = load_model(model, input_shape=dataset.info.input_shape, arch=arch, num_classes=num_classes,
                        mean=mean, std=std, device=device)
    with progress_bar(label or model) as progress:
        report = evaluate(loaded, dataset, config, progress=progress)
    report.write(out)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    return report.to_dict()


def cmd_evaluate(args) -> int:
    config = _config(args)
    document = run_evaluation(args.model, args.dataset, Path(args.out), config, arch=args.arch,
                              num_classes=args.num_classes, mean=args.mean, std=args.std, image_size=args.image_size)
    console.print(summary_table(document))
    s = document["summary"]
    console.print(f"clean accuracy {100 * s['clean_accuracy']:.1f} %, robust AUC {s['robust_auc']:.3f}, "
                  f"{document['timing']['seconds']:.1f} s on {document['timing']['device']}")
    console.print(f"report: {Path(args.out) / 'report.json'}")
    return 0


def cmd_demo(args) -> int:
    out = Path(args.out)
    config = EvaluationConfig(eps=DEFAULT_EPS, targeted="next", cam="auto", device=args.device)
    documents = []
    for name in DEMO_MODELS:
        documents.append(run_evaluation(f"demo:{name}", "digits", out / name, config, label=name))
    console.print(comparison_table(documents))
    console.print(f"reports: {', '.join(str(out / name / 'report.json') for name in DEMO_MODELS)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advaudit", description="Adversarial robustness evaluation for PyTorch image classifiers.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_evaluate(commands)
    demo = commands.add_parser("demo", help="evaluate every demo model on the digits test split")
    demo.add_argument("--out", default="reports/demo", help="folder for the demo reports (default reports/demo)")
    demo.add_argument("--device", default="auto")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"evaluate": cmd_evaluate, "demo": cmd_demo}[args.command]
    try:
        return handler(args)
    except AdvauditError as error:
        console.print(f"[bold red]error:[/] {error}")
        return 2
    except OSError as error:  # unreadable input or unwritable --out: the user's to fix, not a crash
        console.print(f"[bold red]error:[/] {error.strerror or error}: {error.filename or ''}".rstrip(": "))
        return 2


if __name__ == "__main__":
    sys.exit(main())
