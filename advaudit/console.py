"""Terminal output (rich): progress bars, report summaries, audits, runs and their diff tables."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.audit_states import BASELINE, ERROR, PASSED, REGRESSED, SUSPICIOUS
from services.audit_verdict import (
    check_title,
    failed_checks,
    report_version,
    sanity_verdict,
    worst_case_accuracy,
)

console = Console()
if not console.is_terminal:
    # Piped output (CI logs, files) has no terminal width; tables need more than rich's default 80.
    console = Console(width=160)


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator:
    """A progress callback for services.evaluation.evaluate, drawn as one bar per stage."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
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


def _eps_key(value: float) -> float:
    return round(float(value), 9)


def summary_table(document: dict) -> Table:
    """One evaluation: worst-case accuracy (every attack), FGSM accuracy and success rate at each ε."""
    v1 = report_version(document) < 2
    table = Table(
        title=f"{document['model']['source']} on {document['dataset']['source']} "
        f"({document['dataset']['num_samples']} samples)" + (" — FGSM only (report v1)" if v1 else "")
    )
    table.add_column("ε", justify="right")
    table.add_column("ε×255", justify="right")
    worst = {} if v1 else worst_case_accuracy(document)
    if worst:
        table.add_column("worst-case acc. %", justify="right", style="bold")
    table.add_column("FGSM accuracy %", justify="right")
    table.add_column("attack success %", justify="right")
    fgsm = {p["eps"]: p for p in document["fgsm"]}
    targeted = {p["eps"]: p for p in (document["targeted_fgsm"] or {}).get("points", [])}
    if targeted:
        table.add_column("targeted acc. %", justify="right")
        table.add_column("target success %", justify="right")
    for eps in sorted(fgsm.keys() | targeted.keys()):
        point, t = fgsm.get(eps), targeted.get(eps)
        row = [f"{eps:.4f}", f"{eps * 255:.1f}"]
        if worst:
            row.append(pct(worst.get(_eps_key(eps))) if point else "")
        row += [pct(point["accuracy"]), pct(point["attack_success_rate"])] if point else ["", ""]
        if targeted:
            row += [pct(t["accuracy"]), pct(t["target_success_rate"])] if t else ["", ""]
        table.add_row(*row)
    return table


def _auc(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def comparison_table(documents: list[dict]) -> Table:
    """Several evaluations side by side: clean accuracy, worst-case accuracy at each ε, worst-case and FGSM
    AUC, target success, drift, MACs and the sanity verdict (a suspicious one in red)."""
    eps = [p["eps"] for p in documents[0]["fgsm"]]
    table = Table(
        title="Robustness comparison: worst-case accuracy % (every attack; FGSM for v1 reports) at ε = k/255"
    )
    table.add_column("model", no_wrap=True)
    table.add_column("clean", justify="right")
    for e in eps:
        table.add_column(f"{e * 255:g}", justify="right")
    for name in ("worst-case AUC", "FGSM AUC", "target success %", "CAM drift", "MACs", "sanity"):
        table.add_column(name, justify="right", no_wrap=True)
    for doc in documents:
        by_eps = worst_case_accuracy(doc, fgsm_fallback=True)
        summary = doc["summary"]
        drift = summary.get("cam_drift")
        v1 = report_version(doc) < 2
        table.add_row(
            escape(doc["model"]["source"]),
            pct(doc["clean"]["accuracy"]),
            *[pct(by_eps.get(_eps_key(e))) for e in eps],
            _auc(summary.get("robust_auc") if v1 else summary.get("worst_case_auc")),
            _auc(summary.get("robust_auc")),
            pct(summary.get("max_target_success_rate")),
            "—" if drift is None else f"{drift:.3f}",
            f"{summary['macs'] / 1e6:.2f} M" if summary.get("macs") else "—",
            _sanity_cell(doc),
        )
    return table


def _sanity_cell(document: dict) -> str:
    verdict = sanity_verdict(document)
    if verdict is None:
        return "— (v1)"
    if verdict == SUSPICIOUS:
        return "[bold red]SUSPICIOUS[/]"
    return f"[green]{escape(verdict)}[/]"


def _title(name: str) -> str:
    try:
        return check_title(name)
    except ImportError:  # the engine is not installed: the check's report name says it too
        return name


def sanity_lines(document: dict) -> list[str]:
    """`sanity: passed`, or `sanity: SUSPICIOUS — failed: <check titles>` (red) and one line per failed
    check with its numbers; markup-safe. A version 1 report has no sanity checks."""
    verdict = sanity_verdict(document)
    if verdict is None:
        return ["sanity: not checked (FGSM only, report v1)"]
    if verdict != SUSPICIOUS:
        return [f"sanity: [green]{escape(verdict)}[/]"]
    failed = failed_checks(document)
    titles = ", ".join(_title(check["name"]) for check in failed) or "(no check named)"
    lines = [f"[bold red]sanity: SUSPICIOUS — failed: {escape(titles)}[/]"]
    lines += [f"  [red]{escape(check['name'])}:[/] {escape(check['detail'])}" for check in failed]
    lines.append("  [red]the robust accuracy may be overstated: do not trust it until the checks pass[/]")
    return lines


def print_sanity(document: dict) -> None:
    for line in sanity_lines(document):
        console.print(line)


def headline(document: dict) -> str:
    """ "clean accuracy 97.9 %, worst-case robust AUC 0.143 (FGSM robust AUC 0.312)" (v1: FGSM only)."""
    s = document["summary"]
    text = f"clean accuracy {100 * s['clean_accuracy']:.1f} %, "
    if report_version(document) < 2:
        return text + f"robust AUC {s['robust_auc']:.3f} (FGSM only, report v1)"
    return text + (
        f"worst-case robust AUC {_auc(s.get('worst_case_auc'))} (FGSM robust AUC {_auc(s.get('robust_auc'))})"
    )


VERDICT_STYLE = {
    PASSED: "green",
    BASELINE: "cyan",
    REGRESSED: "bold red",
    SUSPICIOUS: "bold red",
    ERROR: "red",
}


def describe_schedule(audit: dict) -> str:
    """The schedule in words, markup-safe (user text escaped)."""
    return escape(_schedule_words(audit))


def _schedule_words(audit: dict) -> str:
    if audit["cron"]:
        when = f"cron '{audit['cron']}' ({audit['timezone']})"
    elif audit["interval_s"]:
        when = f"every {audit['interval_s']} s"
    else:
        when = "on demand"
    if audit["run_on_new_version"]:
        when += ", and on each new version"
    if not audit["enabled"]:
        when += " [disabled]"
    nxt = audit.get("next_run_at")
    return when + (f"; next run {nxt}" if nxt else "")


def _verdict(value: str | None) -> str:
    if value is None:
        return "—"
    style = VERDICT_STYLE.get(value)
    return f"[{style}]{escape(value)}[/]" if style else escape(value)


def audits_table(audits: list[dict]) -> Table:
    """Every audit with its models, dataset, schedule and last verdict."""
    table = Table(title="Audits")
    for column in ("id", "name", "models", "dataset", "schedule", "last verdict"):
        table.add_column(column)
    for audit in audits:
        models = audit["model_name"] or ",".join(map(str, audit["model_ids"]))
        table.add_row(
            str(audit["id"]),
            escape(audit["name"]),
            escape(models),
            str(audit["dataset_id"]),
            describe_schedule(audit),
            _verdict(audit["last_verdict"]),
        )
    return table


def runs_table(runs: list[dict]) -> Table:
    """Recent runs: trigger, state, verdict, clean accuracy, worst-case and FGSM AUC of the candidate."""
    table = Table(title="Runs (newest first)")
    numbers = ("clean %", "worst AUC", "FGSM AUC")
    for column in ("run", "trigger", "slot", "status", "verdict", *numbers, "regressed metrics"):
        table.add_column(column, justify="right" if column in numbers else "left")
    for run in runs:
        table.add_row(
            str(run["id"]),
            escape(run["trigger"]),
            escape(run["slot"]),
            escape(run["status"]),
            _verdict(run["verdict"]),
            pct(run["clean_accuracy"]),
            _auc(run.get("worst_case_auc")),
            _auc(run["robust_auc"]),
            str(run["regressed_metrics"]),
        )
    return table


def _value(value: float | None, unit: str) -> str:
    return "—" if value is None else (f"{value:.1f}" if unit == "pp" else f"{value:.3f}")


def diff_tables(run: dict) -> list[Table]:
    """Per candidate job: every metric against the baseline, regressions marked."""
    tables = []
    for entry in run["comparisons"]:
        candidate, baseline = entry["candidate"], entry["baseline"]
        if baseline is None or not entry["rows"]:
            continue
        table = Table(
            title=escape(
                f"{candidate['model_name']} {candidate['model_version']} "
                f"(job {candidate['job_id']}) vs baseline {baseline['model_name']} "
                f"{baseline['model_version']} (job {baseline['job_id']})"
            )
        )
        for column in ("metric", "ε×255", "baseline", "candidate", "Δ", "allowed", ""):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for row in entry["rows"]:
            eps = "" if row["eps"] is None else f"{row['eps'] * 255:g}"
            allowed = (
                "—"
                if row["threshold"] is None
                else f"{'-' if row['direction'] == 'drop' else '+'}{row['threshold']:g}"
            )
            delta = "—" if row["delta"] is None else f"{row['delta']:+.{1 if row['unit'] == 'pp' else 3}f}"
            mark = "[bold red]REGRESSED[/]" if row["regressed"] else ""
            table.add_row(
                escape(row["metric"]),
                eps,
                _value(row["baseline"], row["unit"]),
                _value(row["candidate"], row["unit"]),
                delta,
                allowed,
                mark,
            )
        tables.append(table)
    return tables


def print_run(run: dict) -> None:
    console.print(
        f"run {run['id']} ({escape(run['trigger'])}): {escape(run['status'])}, "
        f"verdict {_verdict(run['verdict'])}"
    )
    if run["reason"]:
        console.print(f"  {escape(run['reason'])}")
    for table in diff_tables(run):
        console.print(table)
