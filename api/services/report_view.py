"""Report documents as the pages and the leaderboard read them, whatever their schema version.

Version 2 reports carry every attack's curve, the per-sample worst case over the attacks (the headline) and
the sanity checks. Version 1 reports (FGSM only) are still stored: their worst case is the FGSM accuracy,
labelled V1_NOTE, and they have no sanity verdict. Check titles and meanings come from services.sanity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from services import metrics
from services.audit_states import SUSPICIOUS
from services.audit_transfer import RANKING_EPS
from services.audit_verdict import (
    EPS_DIGITS,
    report_version,
    sanity_verdict,
    worst_case_accuracy,
    worst_case_attacks,
)
from services.sanity import CHECKS_BY_NAME

V1_NOTE = "FGSM only (report v1)"
NORM_NAMES = {"linf": "L∞", "l2": "L2"}


def eps_key(value: float) -> float:
    return round(float(value), EPS_DIGITS)


def worst_case_source(document: dict[str, Any]) -> str:
    """What the worst case is taken over, in words: "worst case over fgsm, pgd, square" or V1_NOTE."""
    if report_version(document) < 2:
        return V1_NOTE
    return "worst case over " + ", ".join(worst_case_attacks(document))


def check_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every sanity check of the report with its declared title and meaning (empty for version 1)."""
    rows = []
    for check in (document.get("sanity") or {}).get("checks") or []:
        declared = CHECKS_BY_NAME.get(str(check.get("name")))
        rows.append(
            {
                "name": check.get("name"),
                "title": declared.title if declared else check.get("name"),
                "meaning": declared.meaning if declared else "",
                "status": check.get("status"),
                "detail": check.get("detail") or "",
            }
        )
    return rows


def failures(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The failed checks: {name, title, meaning, detail}."""
    return [
        {key: row[key] for key in ("name", "title", "meaning", "detail")}
        for row in check_rows(document)
        if row["status"] == "failed"
    ]


def flag_text(document: dict[str, Any]) -> str | None:
    """The title of a suspicious report's flag: which checks failed and what that means; None otherwise."""
    if sanity_verdict(document) != SUSPICIOUS:
        return None
    failed = failures(document)
    if not failed:
        return "suspicious: the sanity verdict is suspicious"
    return "suspicious: " + "; ".join(f"{check['title']} failed — {check['meaning']}" for check in failed)


def _attack_label(entry: dict[str, Any]) -> str:
    name = str(entry.get("name"))
    if name == "fgsm":
        return "FGSM"
    parts = [NORM_NAMES.get(str(entry.get("norm")), str(entry.get("norm")))]
    if entry.get("queries"):
        parts.append(f"{entry['queries']} queries")
    else:
        if entry.get("loss"):
            parts.append(str(entry["loss"]))
        if entry.get("steps"):
            parts.append(f"{entry['steps']} steps")
        restarts = entry.get("restarts") or 1
        if restarts > 1:
            parts.append(f"{restarts} restarts")
    return f"{name.upper()} ({', '.join(parts)})"


def attack_table(document: dict[str, Any]) -> dict[str, Any]:
    """Accuracy of every untargeted attack per ε of the FGSM list, and the worst case over them."""
    fgsm = document.get("fgsm") or []
    eps = [point["eps"] for point in fgsm]
    keys = [eps_key(e) for e in eps]
    rows = []
    entries = [entry for entry in document.get("attacks") or [] if not entry.get("targeted")]
    if not entries:  # version 1: FGSM is the only attack
        entries = [{"name": "fgsm", "points": fgsm}]
    for entry in entries:
        by_eps = {eps_key(p["eps"]): p.get("accuracy") for p in entry.get("points") or []}
        rows.append(
            {
                "name": entry.get("name"),
                "label": _attack_label(entry),
                "accuracy": [by_eps.get(key) for key in keys],
            }
        )
    worst = worst_case_accuracy(document, fgsm_fallback=True)
    return {"eps": eps, "rows": rows, "worst_case": [worst.get(key) for key in keys]}


def job_view(document: dict[str, Any]) -> dict[str, Any]:
    """What the job page's report part shows besides the raw document: headline, attack and sanity tables."""
    summary = document.get("summary") or {}
    version = report_version(document)
    table = attack_table(document)
    fgsm = {eps_key(p["eps"]): p.get("accuracy") for p in document.get("fgsm") or []}
    headline = [
        {"eps": e, "accuracy": worst, "fgsm_accuracy": fgsm.get(eps_key(e))}
        for e, worst in zip(table["eps"], table["worst_case"], strict=True)
    ]
    return {
        "version": version,
        "v1": version < 2,
        "v1_note": V1_NOTE,
        "source": worst_case_source(document),
        "worst_case_auc": summary.get("worst_case_auc") if version >= 2 else summary.get("robust_auc"),
        "fgsm_auc": summary.get("robust_auc"),
        "headline": headline,
        "attacks": table,
        "sanity_verdict": sanity_verdict(document),
        "checks": check_rows(document),
        "failed": failures(document),
    }


def shared_grid(documents: Sequence[dict[str, Any]]) -> tuple[list[float], float | None]:
    """The ε values every document swept (sorted), and the ranking ε: 8/255 if all swept it, else the
    largest nonzero shared ε (None when they share none)."""
    sets = [set(worst_case_accuracy(document, fgsm_fallback=True)) for document in documents]
    shared = sorted(set.intersection(*sets)) if sets else []
    if eps_key(RANKING_EPS) in shared:
        return shared, eps_key(RANKING_EPS)
    nonzero = [e for e in shared if e > 0]
    return shared, (max(nonzero) if nonzero else None)


def _auc(eps: list[float], values: list[float | None]) -> float | None:
    if not eps or any(v is None or not math.isfinite(v) for v in values):
        return None
    return metrics.robust_auc(eps, [float(v) for v in values if v is not None])


def standing(document: dict[str, Any], shared: list[float], ranking_eps: float | None) -> dict[str, Any]:
    """One document on a shared grid: worst-case accuracy at the ranking ε, and the worst-case and FGSM
    AUCs over the shared ε values only (comparable across documents, unlike each report's own AUC)."""
    worst = worst_case_accuracy(document, fgsm_fallback=True)
    fgsm = {eps_key(p["eps"]): p.get("accuracy") for p in document.get("fgsm") or []}
    return {
        "worst_case": worst,
        "ranking_accuracy": worst.get(ranking_eps) if ranking_eps is not None else None,
        "worst_case_auc": _auc(shared, [worst.get(e) for e in shared]),
        "fgsm_auc": _auc(shared, [fgsm.get(e) for e in shared]),
    }


def format_eps(value: float) -> str:
    """ε as k/255 when it is one, else the number."""
    k = value * 255
    return f"{k:.3g}/255" if abs(k - round(k)) < 1e-6 else f"{value:.4g}"
