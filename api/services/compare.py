"""Leaderboard: succeeded jobs on one dataset, aligned on the union of their ε values."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.errors import Conflict, NotFound, Unprocessable
from api.services import is_decimal
from db import repositories as repo
from db.models import DatasetRecord, Job
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


def _row(job: Job, eps: list[float]) -> dict[str, Any]:
    document = job.report or {}
    points = {_eps_key(point["eps"]): point for point in document.get("fgsm") or []}
    summary = document.get("summary") or {}
    targeted = document.get("targeted_fgsm") or {}
    return {
        "job_id": job.id,
        "model_id": job.model_id,
        "model_name": job.model.name,
        "model_version": job.model.version,
        "clean_accuracy": summary.get("clean_accuracy"),
        "accuracy": [points.get(e, {}).get("accuracy") for e in eps],
        "attack_success_rate": [points.get(e, {}).get("attack_success_rate") for e in eps],
        "robust_auc": summary.get("robust_auc"),
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
    """Rows sorted by robust AUC (best first); per-ε columns over the union of the jobs' ε values."""
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
    warnings = []
    if len(set(eps_sets)) > 1:
        warnings.append(
            "the jobs swept different ε lists: robust AUC averages over each job's own ε range, "
            "so compare the accuracy columns at shared ε values"
        )
    rows = sorted(
        (_row(job, eps) for job in jobs),
        key=lambda row: (row["robust_auc"] is None, -(row["robust_auc"] or 0.0), row["job_id"]),
    )
    return {
        "dataset": dataset,
        "eps": eps,
        "eps_255": [e * 255 for e in eps],
        "rows": rows,
        "warnings": warnings,
    }
