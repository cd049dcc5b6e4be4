"""/audits: scheduled regression audits (define, change, delete, run now) and their runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from api.audit_schemas import AuditCreate, AuditRead, AuditRunRead, AuditUpdate
from api.deps import AuditDep, DispatchDep, SessionDep, SettingsDep, StoreDep
from api.errors import NotFound
from api.schemas import MAX_ID, NO_NUL, Page
from api.services import audit_runs as run_service
from api.services import audits as service
from db.models import AuditRun
from services.audit_states import RunStatus

router = APIRouter(prefix="/audits", tags=["audits"])

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.post("", response_model=AuditRead, status_code=201)
def create_audit(body: AuditCreate, session: SessionDep, store: StoreDep, settings: SettingsDep):
    """Define an audit; every field is validated (422 / 409) before anything is written."""
    audit = service.create_audit(session=session, store=store, settings=settings, body=body)
    return service.audit_read(session, audit)


@router.get("", response_model=Page[AuditRead])
def list_audits(
    session: SessionDep,
    enabled: bool | None = None,
    model_name: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
):
    """Audits, newest first, each with its next slot, newest run and last verdict."""
    return service.list_audits(
        session=session, enabled=enabled, model_name=model_name, limit=limit, offset=offset
    )


@router.get("/{audit_id}", response_model=AuditRead)
def read_audit(audit: AuditDep, session: SessionDep):
    return service.audit_read(session, audit)


@router.patch("/{audit_id}", response_model=AuditRead)
def update_audit(
    audit: AuditDep, body: AuditUpdate, session: SessionDep, store: StoreDep, settings: SettingsDep
):
    """Change an audit; the scheduler sees it at its next tick (a changed schedule starts from now)."""
    audit = service.update_audit(session=session, store=store, settings=settings, audit=audit, body=body)
    return service.audit_read(session, audit)


@router.delete("/{audit_id}", status_code=204)
def delete_audit(audit: AuditDep, session: SessionDep) -> Response:
    """Delete the audit and its runs; the evaluation jobs and their reports stay."""
    service.delete_audit(session=session, audit=audit)
    return Response(status_code=204)


@router.post("/{audit_id}/run", response_model=AuditRunRead, status_code=202)
def run_audit(audit: AuditDep, session: SessionDep, dispatch: DispatchDep):
    """Run the audit now (also when disabled); the run is pending until a worker creates its jobs."""
    return run_service.run_now(session=session, audit=audit, dispatch=dispatch)


@router.get("/{audit_id}/runs", response_model=Page[AuditRunRead])
def list_runs(
    audit: AuditDep,
    session: SessionDep,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
):
    """The audit's runs, newest first, with verdicts, metrics and the diff table against the baseline."""
    return run_service.list_runs(session=session, audit=audit, status=status, limit=limit, offset=offset)


@router.get("/{audit_id}/runs/{run_id}", response_model=AuditRunRead)
def read_run(audit: AuditDep, run_id: IdPath, session: SessionDep):
    run: AuditRun | None = run_service.audit_run(session=session, audit=audit, run_id=run_id)
    if run is None:
        raise NotFound(f"audit {audit.id} has no run {run_id}")
    return run_service.read_run(session=session, run=run)
