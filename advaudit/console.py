"""Terminal output: progress bars and summary tables (rich)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
if not console.is_terminal:
    # Piped output (CI logs, files) has no terminal width; tables need more than rich's default 80.
    console = Console(width=160)


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator:
    """A progress callback for services.evaluation.evaluate, drawn as one bar per stage."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    ) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                name = {"sweep": "FGSM sweep", "cam": "CAM audit"}.get(stage, stage)
                tasks[stage] = bar.add_task(f"{label} · {name}", total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def summary_table(document: dict) -> Table:
    """One evaluation: accuracy and success rate at each ε."""
    table = Table(title=f"{document['model']['source']} on {document['dataset']['source']} "
                        f"({document['dataset']['num_samples']} samples)")
    table.add_column("ε", justify="right")
    table.add_column("ε×255", justify="right")
    table.add_column("accuracy %", justify="right")
    table.add_column("attack success %", justify="right")
    fgsm = {p["eps"]: p for p in document["fgsm"]}
    targeted = {p["eps"]: p for p in (document["targeted_fgsm"] or {}).get("points", [])}
    if targeted:
        table.add_column("targeted acc. %", justify="right")
        table.add_column("target success %", justify="right")
    for eps in sorted(fgsm.keys() | targeted.keys()):
        point, t = fgsm.get(eps), targeted.get(eps)
        row = [f"{eps:.4f}", f"{eps * 255:.1f}"]
        row += [pct(point["accuracy"]), pct(point["attack_success_rate"])] if point else ["", ""]
        if targeted:
            row += [pct(t["accuracy"]), pct(t["target_success_rate"])] if t else ["", ""]
        table.add_row(*row)
    return table


def comparison_table(documents: list[dict]) -> Table:
    """Several evaluations side by side: clean accuracy, accuracy at each ε, AUC, target success, drift, MACs."""
    eps = [p["eps"] for p in documents[0]["fgsm"]]
    table = Table(title="Robustness comparison: accuracy % under FGSM at ε = k/255")
    table.add_column("model", no_wrap=True)
    table.add_column("clean", justify="right")
    for e in eps:
        table.add_column(f"{e * 255:g}", justify="right")
    for name in ("AUC", "target success %", "CAM drift", "MACs"):
        table.add_column(name, justify="right", no_wrap=True)
    for doc in documents:
        by_eps = {p["eps"]: p["accuracy"] for p in doc["fgsm"]}
        summary = doc["summary"]
        drift = summary.get("cam_drift")
        table.add_row(
            doc["model"]["source"], pct(doc["clean"]["accuracy"]), *[pct(by_eps.get(e)) for e in eps],
            f"{summary['robust_auc']:.3f}", pct(summary.get("max_target_success_rate")),
            "—" if drift is None else f"{drift:.3f}", f"{summary['macs'] / 1e6:.2f} M" if summary.get("macs") else "—",
        )
    return table
