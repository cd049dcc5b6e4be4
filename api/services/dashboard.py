"""Read models of the dashboard pages: recent work, a model's architecture and versions, report pieces."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from api.errors import ApiError, NotFound
from api.services import architecture, report_view
from contracts.settings import Settings
from db import repositories as repo
from db.models import Artifact, DatasetRecord, Job, ModelRecord
from db.storage import ArtifactStore
from services.errors import AdvauditError
from services.job_states import ACTIVE, SUCCEEDED

RECENT_JOBS = 25
CHOOSABLE_JOBS = 100
MAX_VERSIONS = 50
TRIPTYCH = re.compile(r"triptych_(\d+)\.png")


@dataclass(frozen=True)
class VersionResult:
    """The latest succeeded job of one version of a model on one dataset."""

    model: ModelRecord
    dataset: DatasetRecord
    job: Job

    @property
    def summary(self) -> dict[str, Any]:
        return (self.job.report or {}).get("summary") or {}


@dataclass(frozen=True)
class ModelAudit:
    """A model's architecture audit, whether it has a first-layer filter grid, or why neither exists."""

    document: dict[str, Any] | None
    has_filter_grid: bool
    problem: str | None = None


def model_audit(
    *, session: Session, store: ArtifactStore, settings: Settings, model: ModelRecord
) -> ModelAudit:
    """The audit made at registration (computed now for a model registered before audits were kept)."""
    try:
        document = architecture.architecture(session=session, store=store, settings=settings, model=model)
    except (ApiError, AdvauditError) as error:
        return ModelAudit(None, False, str(error))
    try:
        architecture.filter_grid(session=session, store=store, settings=settings, model=model)
    except NotFound:  # no conv layer: nothing to draw
        return ModelAudit(document, False)
    return ModelAudit(document, True)


def recent_jobs(*, session: Session, limit: int = RECENT_JOBS) -> list[Job]:
    return list(repo.jobs.list(session=session, limit=limit))


def any_active(jobs: list[Job]) -> bool:
    return any(job.status in ACTIVE for job in jobs)


def models(*, session: Session) -> list[ModelRecord]:
    return list(repo.models.list(session=session, limit=1000))


def datasets(*, session: Session) -> list[DatasetRecord]:
    return list(repo.datasets.list(session=session, limit=1000))


def succeeded_jobs(*, session: Session, limit: int = CHOOSABLE_JOBS) -> list[Job]:
    return list(repo.jobs.list(session=session, status=SUCCEEDED, limit=limit))


def model_jobs(*, session: Session, model: ModelRecord, limit: int = RECENT_JOBS) -> list[Job]:
    return list(repo.jobs.list(session=session, model_id=model.id, limit=limit))


def version_history(*, session: Session, model: ModelRecord) -> list[VersionResult]:
    """For every version of the model's name (oldest first), its latest succeeded job on each dataset."""
    versions = {
        record.id: record for record in repo.models.list(session=session, name=model.name, limit=MAX_VERSIONS)
    }
    jobs = repo.jobs.latest_succeeded(session=session, model_ids=versions)
    return [
        VersionResult(model=versions[job.model_id], dataset=job.dataset, job=job)
        for job in sorted(jobs, key=lambda job: (job.model_id, job.id))
        if job.report is not None
    ]


def version_standings(versions: list[VersionResult]) -> list[dict[str, Any]]:
    """Per version row: worst-case accuracy at the ε all rows on its dataset swept (8/255 if they all did),
    the worst-case AUC over that shared ε grid only, and the sanity flag."""
    by_dataset: dict[int, list[VersionResult]] = {}
    for row in versions:
        by_dataset.setdefault(row.dataset.id, []).append(row)
    grids = {
        dataset_id: report_view.shared_grid([row.job.report or {} for row in rows])
        for dataset_id, rows in by_dataset.items()
    }
    standings = []
    for row in versions:
        document = row.job.report or {}
        shared, ranking_eps = grids[row.dataset.id]
        standing = report_view.standing(document, shared, ranking_eps)
        standings.append(
            {
                "ranking_eps": ranking_eps,
                "ranking_accuracy": standing["ranking_accuracy"],
                "worst_case_auc": standing["worst_case_auc"],
                "shared_eps": shared,
                "source": report_view.worst_case_source(document),
                "sanity_verdict": report_view.sanity_verdict(document),
                "flag": report_view.flag_text(document),
            }
        )
    return standings


def artifacts(*, session: Session, job: Job) -> list[Artifact]:
    return list(repo.results.list_artifacts(session=session, job_id=job.id))


def triptych_names(names: list[str]) -> list[str]:
    """triptych_0.png, triptych_1.png, … in numeric order (triptych_10 after triptych_9)."""
    numbered = {name: TRIPTYCH.fullmatch(name) for name in names}
    return sorted(
        (name for name, match in numbered.items() if match), key=lambda name: int(numbered[name].group(1))
    )
