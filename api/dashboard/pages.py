"""Read-only pages: overview, job report (with its live part), model audit."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from api.dashboard.auth import FragmentAuth, PageAuth
from api.dashboard.errors import page_not_found
from api.dashboard.templating import render
from api.deps import SessionDep, SettingsDep, StoreDep
from api.schemas import MAX_ID
from api.services import cam_images, feature_view, is_decimal, report_view
from api.services import dashboard as views
from api.services import jobs as job_service
from api.services import models as model_service
from db.models import Job, ModelRecord
from services.job_states import ACTIVE, SUCCEEDED

router = APIRouter(include_in_schema=False)


def record_id(text: str, what: str) -> int:
    """A path id; text that cannot be an id names a record that does not exist (404, not 422)."""
    if not is_decimal(text) or not 1 <= int(text) <= MAX_ID:
        raise page_not_found(f"{what} {text!r}")
    return int(text)


def page_job(session: SessionDep, job_id: str) -> Job:
    """The job of the URL, or a 404 page (ids that are not numbers are simply unknown jobs)."""
    job = job_service.find(session=session, job_id=record_id(job_id, "Job"))
    if job is None:
        raise page_not_found(f"Job {job_id}")
    return job


def page_model(session: SessionDep, model_id: str) -> ModelRecord:
    model = model_service.find(session=session, model_id=record_id(model_id, "Model"))
    if model is None:
        raise page_not_found(f"Model {model_id}")
    return model


PageJob = Annotated[Job, Depends(page_job)]
PageModel = Annotated[ModelRecord, Depends(page_model)]


@router.get("/", dependencies=[PageAuth])
def home(request: Request, session: SessionDep) -> Response:
    jobs = views.recent_jobs(session=session)
    return render(
        request,
        "home.html",
        {
            "jobs": jobs,
            "live": views.any_active(jobs),
            "models": views.models(session=session),
            "datasets": views.datasets(session=session),
        },
    )


def report_context(session, store, job: Job) -> dict[str, Any]:
    """What the report part of a job page needs (empty until the job succeeded)."""
    if job.status != SUCCEEDED or job.report is None:
        return {"report": None}
    names = [artifact.name for artifact in views.artifacts(session=session, job=job)]
    return {
        "report": job.report,
        "view": report_view.job_view(job.report),
        "artifact_names": names,
        "triptychs": views.triptych_names(names),
        "cam_overlays": cam_images.overlays_available(session=session, store=store, job=job),
        "features": feature_view.feature_view(job.report, names),
    }


@router.get("/jobs/{job_id}", dependencies=[PageAuth])
def job_page(request: Request, session: SessionDep, store: StoreDep, job: PageJob) -> Response:
    return render(
        request,
        "job.html",
        {
            "job": job,
            "active": job.status in ACTIVE,
            "shards": job_service.shards(session=session, job=job),
            **report_context(session, store, job),
        },
    )


@router.get("/jobs/{job_id}/report-section", dependencies=[FragmentAuth])
def job_report_section(request: Request, session: SessionDep, store: StoreDep, job: PageJob) -> Response:
    """The report part alone: the job page swaps it in when the job succeeds, without a reload."""
    return render(request, "_report.html", {"job": job, **report_context(session, store, job)})


@router.get("/jobs/{job_id}/cam/{position}/{view}.png", dependencies=[FragmentAuth])
def cam_image(session: SessionDep, store: StoreDep, job: PageJob, position: str, view: str) -> Response:
    """One map of the CAM gallery; immutable once rendered, so the browser may keep it."""
    png = cam_images.cam_png(
        session=session,
        store=store,
        job=job,
        position=int(position) if is_decimal(position) else -1,
        view=view,
    )
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})


@router.get("/models/{model_id}", dependencies=[PageAuth])
def model_page(
    request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep, model: PageModel
) -> Response:
    versions = views.version_history(session=session, model=model)
    standings = views.version_standings(versions)
    return render(
        request,
        "model.html",
        {
            "model": model,
            "audit": views.model_audit(session=session, store=store, settings=settings, model=model),
            "jobs": views.model_jobs(session=session, model=model),
            "gallery": feature_view.latest_gallery(session=session, model=model),
            "versions": versions,
            "standings": standings,
            "versions_data": [
                {
                    "version": row.model.version,
                    "dataset": row.dataset.name,
                    "job_id": row.job.id,
                    "clean_accuracy": row.summary.get("clean_accuracy"),
                    "robust_auc": row.summary.get("robust_auc"),
                    "worst_case_auc": standing["worst_case_auc"],
                    "ranking_accuracy": standing["ranking_accuracy"],
                    "ranking_eps": standing["ranking_eps"],
                    "sanity_verdict": standing["sanity_verdict"],
                }
                for row, standing in zip(versions, standings, strict=True)
            ],
        },
    )
