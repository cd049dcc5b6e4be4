"""Local commands: `advaudit evaluate` and `advaudit demo` run in this process, no server needed."""

from __future__ import annotations

import argparse
from pathlib import Path

from advaudit.console import (
    comparison_table,
    console,
    headline,
    print_sanity,
    progress_bar,
    sanity_lines,
    summary_table,
)
from advaudit.options import add_evaluation_options, config_from_args, floats
from services.errors import ConfigError
from services.specs import DEFAULT_EPS, EvaluationConfig

# torch and the engine are imported by the commands that run it, never by `advaudit --help` or client commands.


def add_commands(commands) -> None:
    p = commands.add_parser("evaluate", help="evaluate one model on one dataset and write a report folder")
    p.add_argument(
        "--model", required=True, help="checkpoint (.pt2, TorchScript, .safetensors, .pt/.pth) or demo:NAME"
    )
    p.add_argument(
        "--dataset", required=True, help="digits, an .npz file, or an ImageFolder directory or .zip"
    )
    p.add_argument("--out", required=True, help="report folder to write")
    add_evaluation_options(p)
    p.add_argument("--arch", default=None, help="architecture for weights-only checkpoints")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument(
        "--mean", type=floats, default=None, help="per-channel mean the model expects, e.g. 0.485,0.456,0.406"
    )
    p.add_argument("--std", type=floats, default=None, help="per-channel std the model expects")
    p.add_argument(
        "--image-size", type=int, default=None, help="resize ImageFolder images to this square size"
    )
    p.set_defaults(handler=cmd_evaluate)

    demo = commands.add_parser("demo", help="evaluate every demo model on the digits test split")
    demo.add_argument(
        "--out", default="reports/demo", help="folder for the demo reports (default reports/demo)"
    )
    demo.add_argument("--device", default="auto")
    demo.add_argument(
        "--no-record",
        action="store_true",
        help="do not record the runs in the local database (ADVAUDIT_DATA_DIR, ~/.advaudit)",
    )
    demo.set_defaults(handler=cmd_demo)


def run_evaluation(
    model: str,
    dataset_source: str,
    out: Path,
    config: EvaluationConfig,
    *,
    arch=None,
    num_classes=None,
    mean=None,
    std=None,
    image_size=None,
    label: str | None = None,
) -> dict:
    """Load, evaluate with a progress bar, write the report folder; returns the report document."""
    from services.checkpoints import load_model
    from services.datasets import load_dataset
    from services.evaluation import evaluate, resolve_device

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the report")
    dataset = load_dataset(dataset_source, image_size=image_size)
    device = resolve_device(config.device)
    loaded = load_model(
        model,
        input_shape=dataset.info.input_shape,
        arch=arch,
        num_classes=num_classes,
        mean=mean,
        std=std,
        device=device,
    )
    with progress_bar(label or model) as progress:
        report = evaluate(loaded, dataset, config, progress=progress)
    report.write(out)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    return report.to_dict()


def cmd_evaluate(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    document = run_evaluation(
        args.model,
        args.dataset,
        Path(args.out),
        config,
        arch=args.arch,
        num_classes=args.num_classes,
        mean=args.mean,
        std=args.std,
        image_size=args.image_size,
    )
    console.print(summary_table(document))
    console.print(
        f"{headline(document)}, {document['timing']['seconds']:.1f} s on {document['timing']['device']}"
    )
    print_sanity(document)
    console.print(f"report: {Path(args.out) / 'report.json'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from services.zoo import DEMO_MODELS

    out = Path(args.out)
    config = EvaluationConfig(eps=DEFAULT_EPS, targeted="next", cam="auto", device=args.device)
    documents = []
    for name in DEMO_MODELS:
        documents.append(run_evaluation(f"demo:{name}", "digits", out / name, config, label=name))
    console.print(comparison_table(documents))
    for name, document in zip(DEMO_MODELS, documents, strict=True):
        console.print(f"{name}: {sanity_lines(document)[0]}")
    console.print(f"reports: {', '.join(str(out / name / 'report.json') for name in DEMO_MODELS)}")
    if not args.no_record:
        from advaudit.records import LocalRecorder  # the database layer only when recording

        recorder = LocalRecorder()
        jobs = [
            recorder.record_demo(name, doc, out / name)
            for name, doc in zip(DEMO_MODELS, documents, strict=True)
        ]
        console.print(
            f"recorded as jobs {', '.join(map(str, jobs))} in {recorder.data_dir}: "
            "`advaudit serve` shows them"
        )
    return 0
