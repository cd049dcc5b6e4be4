"""Leaderboard: succeeded jobs on one dataset, aligned on the union of their ε values, ranked on the shared ones.

Rows are ranked by worst-case robust accuracy (the per-sample worst case over every attack; FGSM alone for
version 1 reports) at one ε every compared job swept: 8/255 when all swept it, else the largest nonzero
shared ε. The AUCs used for ranking are computed over the shared ε grid only, never over each job's own range.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.errors import Conflict, NotFound, Unprocessable
from api.services import is_decimal
from api.services import report_view as view
from api.services import transfers as transfer_service
from db import repositories as repo
from db.models import DatasetRecord, Job
from services.audit_states import SUSPICIOUS
from services.audit_verdict import report_version, sanity_verdict
from services.job_states import SUCCEEDED

MAX_JOBS = 100
EPS_DIGITS = 9  # ε values closer than 1e-9 are the same point (8/255 parsed twice gives one float anyway)


def parse_ids(text: str | None, what: str) -> list[int] | None:
    """ "1,2,3" → [1, 2, 3] in the given order, repeats dropped (422 on anything else)."""
    if text is None or not text.strip():
        return None
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not all(is_decimal(part) and 0 < int(part) < 2**31 for part in parts):
        raise Unprocessable(f"{what} must be comma-separated positive integers such as 1,2,3, got {text!r}")
    ids = list(dict.fromkeys(int(part) for part in parts))
    if len(ids) > MAX_JOBS:
        raise Unprocessable(f"{what} lists {len(ids)} ids; at most {MAX_JOBS} can be compared at once")
    return ids


def _jobs_by_id(session: Session, job_ids: list[int]) -> list[Job]:
    jobs = []
    for job_id in job_ids:
        job = repo.jobs.get(session=session, job_id=job_id)
        if job is None:
            raise NotFound(f"job {job_id} does not exist")
        if job.status != SUCCEEDED or job.report is None:
            raise Conflict(f"job {job_id} is {job.status}; only succeeded jobs can be compared")
        jobs.append(job)
    dataset_ids = sorted({job.dataset_id for job in jobs})
    if len(dataset_ids) > 1:
        raise Unprocessable(
            f"the jobs ran on different datasets (ids {', '.join(map(str, dataset_ids))}); "
            "compare jobs on one dataset"
        )
    return jobs


def _latest_per_model(session: Session, dataset: DatasetRecord, model_ids: list[int] | None) -> list[Job]:
    if model_ids is None:
        newest_first = repo.jobs.list(session=session, status=SUCCEEDED, dataset_id=dataset.id, limit=1000)
        latest: dict[int, Job] = {}
        for job in newest_first:
            latest.setdefault(job.model_id, job)
        return list(latest.values())[:MAX_JOBS]
    jobs = []
    for model_id in model_ids:
        model = repo.models.get(session=session, model_id=model_id)
        if model is None:
            raise NotFound(f"model {model_id} does not exist")
        found = repo.jobs.list(
            session=session, status=SUCCEEDED, dataset_id=dataset.id, model_id=model_id, limit=1
        )
        if not found:
            raise Unprocessable(
                f"model {model.name} {model.version} (id {model_id}) has no succeeded job on "
                f"dataset {dataset.name}; submit one first"
            )
        jobs.append(found[0])
    return jobs


def _eps_key(value: float) -> float:
    return round(float(value), EPS_DIGITS)


def _row(job: Job, eps: list[float], shared: list[float], ranking_eps: float | None) -> dict[str, Any]:
    document = job.report or {}
    points = {_eps_key(point["eps"]): point for point in document.get("fgsm") or []}
    summary = document.get("summary") or {}
    targeted = document.get("targeted_fgsm") or {}
    standing = view.standing(document, shared, ranking_eps)
    return {
        "job_id": job.id,
        "model_id": job.model_id,
        "model_name": job.model.name,
        "model_version": job.model.version,
        "clean_accuracy": summary.get("clean_accuracy"),
        "accuracy": [points.get(e, {}).get("accuracy") for e in eps],
        "attack_success_rate": [points.get(e, {}).get("attack_success_rate") for e in eps],
        "robust_auc": summary.get("robust_auc"),
        "worst_case_accuracy": [standing["worst_case"].get(e) for e in eps],
        "ranking_accuracy": standing["ranking_accuracy"],
        "worst_case_auc": standing["worst_case_auc"],
        "fgsm_auc": standing["fgsm_auc"],
        "worst_case_source": view.worst_case_source(document),
        "report_version": report_version(document),
        "sanity_verdict": sanity_verdict(document),
        "failed_checks": view.failures(document),
        "flag": view.flag_text(document),
        "targeted_policy": targeted.get("policy"),
        "targeted_auc": summary.get("targeted_auc"),
        "max_target_success_rate": summary.get("max_target_success_rate"),
        "cam_drift": summary.get("cam_drift"),
        "macs": summary.get("macs"),
        "params": summary.get("params"),
    }


def compare(
    *, session: Session, job_ids: str | None, dataset_id: int | None, model_ids: str | None
) -> dict[str, Any]:
    """Rows ranked by worst-case accuracy at the ranking ε (best first; ties: worst-case AUC over the shared
    ε grid), suspicious jobs after every other (their numbers cannot be trusted, so they never top the board);
    per-ε columns over the union of the jobs' ε values."""
    ids = parse_ids(job_ids, "job_ids")
    if ids is not None and (dataset_id is not None or model_ids):
        raise Unprocessable("give either job_ids, or dataset_id (with optional model_ids), not both")
    if ids is not None:
        jobs = _jobs_by_id(session, ids)
        dataset = jobs[0].dataset
    elif dataset_id is not None:
        dataset = repo.datasets.get(session=session, dataset_id=dataset_id)
        if dataset is None:
            raise NotFound(f"dataset {dataset_id} does not exist")
        jobs = _latest_per_model(session, dataset, parse_ids(model_ids, "model_ids"))
    else:
        raise Unprocessable("give job_ids=1,2,… or dataset_id=… (optionally with model_ids=1,2,…)")
    eps_sets = [frozenset(_eps_key(p["eps"]) for p in (job.report or {}).get("fgsm") or []) for job in jobs]
    eps = sorted(frozenset().union(*eps_sets))
    shared, ranking_eps = view.shared_grid([job.report or {} for job in jobs])
    warnings = []
    if len(set(eps_sets)) > 1:
        grid = ", ".join(view.format_eps(e) for e in shared) or "none"
        warnings.append(
            f"the jobs swept different ε lists: they are ranked on the ε values all of them swept ({grid}), "
            "and the AUCs here are over that shared grid only; the report's own robust AUC is not comparable"
        )
    if ranking_eps is None:
        warnings.append("the jobs share no nonzero ε: they cannot be ranked by robust accuracy")
    rows = sorted(
        (_row(job, eps, shared, ranking_eps) for job in jobs),
        key=lambda row: (
            row["sanity_verdict"] == SUSPICIOUS,
            row["ranking_accuracy"] is None,
            -(row["ranking_accuracy"] or 0.0),
            -(row["worst_case_auc"] if row["worst_case_auc"] is not None else -1.0),
            row["job_id"],
        ),
    )
    _add_black_box(session, rows, dataset.id, ranking_eps)
    old = [row for row in rows if row["report_version"] < 2]
    if old and len(old) < len(rows):
        warnings.append(
            f"{_jobs(old)} {'has' if len(old) == 1 else 'have'} a version 1 report: "
            f"{view.V1_NOTE}, so {'its' if len(old) == 1 else 'their'} worst case is the FGSM accuracy "
            "and overstates robustness next to the others"
        )
    for row in rows:
        if row["sanity_verdict"] == SUSPICIOUS:
            names = ", ".join(check["name"] for check in row["failed_checks"]) or "see its report"
            warnings.append(
                f"job {row['job_id']} ({row['model_name']} {row['model_version']}) is suspicious "
                f"(sanity checks failed: {names}): its robust accuracy may be overstated, so it is ranked last"
            )
    return {
        "dataset": dataset,
        "eps": eps,
        "eps_255": [e * 255 for e in eps],
        "shared_eps": shared,
        "shared_eps_255": [e * 255 for e in shared],
        "ranking_eps": ranking_eps,
        "ranking_eps_255": None if ranking_eps is None else ranking_eps * 255,
        "ranked_by": (
            f"worst-case accuracy at ε = {view.format_eps(ranking_eps)}, suspicious jobs last"
            if ranking_eps is not None
            else "job id (no nonzero ε is shared)"
        ),
        "rows": rows,
        "warnings": warnings,
    }


def _jobs(rows: list[dict[str, Any]]) -> str:
    ids = [str(row["job_id"]) for row in rows]
    return f"job {ids[0]}" if len(ids) == 1 else f"jobs {', '.join(ids)}"


def _add_black_box(
    session: Session, rows: list[dict[str, Any]], dataset_id: int, ranking_eps: float | None
) -> None:
    """Each model's black-box (transfer) worst case at the ranking ε, where a transfer job measured it."""
    found = transfer_service.black_box(
        session=session, model_ids=[row["model_id"] for row in rows], dataset_id=dataset_id
    )
    for row in rows:
        entry = found.get(row["model_id"])
        at = None if entry is None or ranking_eps is None else entry["accuracy"].get(_eps_key(ranking_eps))
        row["transfer_accuracy"] = at
        row["transfer_job_id"] = entry["job_id"] if entry is not None and at is not None else None
