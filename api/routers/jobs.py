"""/jobs: submit, list, read, cancel, rerun, report and artifacts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse, JSONResponse

from api.deps import EnqueueDep, JobDep, SessionDep, StoreDep
from api.schemas import MAX_ID, NO_NUL, ArtifactRead, JobCreate, JobRead, Page, ShardRead
from api.services import jobs as service
from services.job_states import JobStatus

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", response_model=JobRead, status_code=201)
def create_job(body: JobCreate, session: SessionDep, store: StoreDep, enqueue: EnqueueDep):
    """Validate and queue an evaluation; 503 (job marked cancelled) when the broker cannot take it."""
    return service.submit(
        session=session,
        store=store,
        enqueue=enqueue,
        model_id=body.model_id,
        dataset_id=body.dataset_id,
        options=body.config.evaluation_options(),
    )


@router.get("", response_model=Page[JobRead])
def list_jobs(
    session: SessionDep,
    status: JobStatus | None = None,
    model_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    dataset_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
):
    return service.list_jobs(
        session=session, status=status, model_id=model_id, dataset_id=dataset_id, limit=limit, offset=offset
    )


@router.get("/{job_id}", response_model=JobRead)
def read_job(job: JobDep):
    return job


@router.get("/{job_id}/shards", response_model=list[ShardRead])
def list_shards(job: JobDep, session: SessionDep):
    """The job's shards in sample order (empty for a job in one piece): progress, worker and time of each."""
    return service.shards(session=session, job=job)


@router.post("/{job_id}/cancel", response_model=JobRead)
def cancel_job(job: JobDep, session: SessionDep):
    """Cancel a queued job, or ask a running one to stop at its next batch; 409 once finished."""
    return service.cancel(session=session, job=job)


@router.post("/{job_id}/rerun", response_model=JobRead, status_code=201)
def rerun_job(job: JobDep, session: SessionDep, store: StoreDep, enqueue: EnqueueDep):
    """A new job with the same model, dataset and config."""
    return service.rerun(session=session, store=store, enqueue=enqueue, job=job)


@router.get(
    "/{job_id}/report", responses={200: {"description": "the report.json document (schema_version 1)"}}
)
def read_report(job: JobDep) -> JSONResponse:
    """Exactly the report.json of `advaudit evaluate`; 409 until the job succeeded."""
    return JSONResponse(service.report(job))


@router.get("/{job_id}/artifacts", response_model=list[ArtifactRead])
def list_artifacts(job: JobDep, session: SessionDep):
    return service.artifacts(session=session, job=job)


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=FileResponse,
    responses={200: {"description": "the file", "content": {"application/octet-stream": {}}}},
)
def read_artifact(
    job: JobDep,
    session: SessionDep,
    store: StoreDep,
    name: Annotated[str, Path(max_length=200, pattern=NO_NUL)],
) -> FileResponse:
    path, media_type = service.artifact_file(session=session, store=store, job=job, name=name)
    inline = media_type.startswith("image/") or media_type == "application/json"
    return FileResponse(
        path,
        media_type=media_type,
        filename=name,
        content_disposition_type="inline" if inline else "attachment",
    )
