"""Audit pages: the list, one audit (definition, timeline, runs, latest diff), one run; run now, enable, disable,
delete."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from api.audit_schemas import AuditUpdate
from api.dashboard.auth import PageAuth, SameOrigin
from api.dashboard.errors import page_not_found
from api.dashboard.pages import record_id as page_record_id
from api.dashboard.templating import render
from api.deps import DispatchDep, SessionDep, SettingsDep, StoreDep
from api.errors import ApiError
from api.services import audit_pages as views
from api.services import audit_runs as run_service
from api.services import audits as audit_service
from db.models import Audit, AuditRun
from services.audit_verdict import METRIC_NAMES
from services.errors import AdvauditError

router = APIRouter(include_in_schema=False)
# The diff table's accuracy rows are the FGSM sweep's: say so where there is room.
METRIC_LABELS = {**METRIC_NAMES, "accuracy": "FGSM accuracy"}
SAVED_NOTICE = "The audit was saved; a changed schedule counts its slots from now."


def page_audit(session: SessionDep, audit_id: str) -> Audit:
    """The audit of the URL, or a 404 page (ids that are not numbers are simply unknown audits)."""
    audit = audit_service.find(session=session, audit_id=page_record_id(audit_id, "Audit"))
    if audit is None:
        raise page_not_found(f"Audit {audit_id}")
    return audit


def page_run(session: SessionDep, audit: Annotated[Audit, Depends(page_audit)], run_id: str) -> AuditRun:
    """The run of the URL if it belongs to the URL's audit, or a 404 page."""
    run = views.audit_run(session=session, audit_id=audit.id, run_id=page_record_id(run_id, "Run"))
    if run is None:
        raise page_not_found(f"Run {run_id} of audit {audit.id}")
    return run


PageAudit = Annotated[Audit, Depends(page_audit)]
PageRun = Annotated[AuditRun, Depends(page_run)]


@router.get("/audits", dependencies=[PageAuth])
def audits_page(request: Request, session: SessionDep) -> Response:
    # A fixed text: echoing a name from the URL would let any link claim that some audit was deleted.
    notice = (
        "The audit was deleted with its runs; the jobs they created and their reports stay."
        if request.query_params.get("deleted") == "1"
        else None
    )
    return render(request, "audits.html", {"audits": views.audit_list(session=session), "notice": notice})


def _audit_page(
    request: Request,
    session,
    audit: Audit,
    *,
    queued: str = "",
    saved: bool = False,
    error: str | None = None,
    status: int = HTTPStatus.OK,
) -> Response:
    view = views.audit_view(session=session, audit=audit)
    # The notice lasts while the queued run is unfinished: the page reloads itself with the verdict.
    waiting = any(str(run["id"]) == queued and run["status"] != "finished" for run in view.runs)
    notice = f"Run #{queued} was queued; this page follows it until its verdict." if waiting else None
    if notice is None and saved:
        notice = SAVED_NOTICE
    context: dict[str, Any] = {
        "view": view,
        "audit": view.audit,
        "schedule": views.describe_schedule(view.audit),
        "metric_names": METRIC_LABELS,
        "notice": notice,
        "error": error,
    }
    return render(request, "audit.html", context, status_code=status)


@router.get("/audits/{audit_id}", dependencies=[PageAuth])
def audit_page(request: Request, session: SessionDep, audit: PageAudit) -> Response:
    return _audit_page(
        request,
        session,
        audit,
        queued=request.query_params.get("queued", ""),
        saved=request.query_params.get("saved") == "1",
    )


@router.get("/audits/{audit_id}/runs/{run_id}", dependencies=[PageAuth])
def run_page(request: Request, session: SessionDep, audit: PageAudit, run: PageRun) -> Response:
    document = run_service.read_run(session=session, run=run)
    return render(
        request,
        "audit_run.html",
        {
            "audit": audit,
            "run": document,
            "active": document["status"] != "finished",
            "metric_names": METRIC_LABELS,
        },
    )


@router.post("/audits/{audit_id}/run", dependencies=[PageAuth, SameOrigin])
def run_now(request: Request, session: SessionDep, audit: PageAudit, dispatch: DispatchDep) -> Response:
    """Queue a manual run and come back to the audit page, which follows it; a broker outage is explained."""
    try:
        run = run_service.run_now(session=session, audit=audit, dispatch=dispatch)
    except ApiError as error:
        return _audit_page(request, session, audit, error=error.detail, status=error.status)
    return RedirectResponse(f"/audits/{audit.id}?queued={run['id']}", status_code=HTTPStatus.SEE_OTHER)


def _set_enabled(request: Request, session, store, settings, audit: Audit, enabled: bool) -> Response:
    """Enable or disable through the same use case as PATCH /api/v1/audits/{id} (it re-validates the audit)."""
    try:
        audit_service.update_audit(
            session=session, store=store, settings=settings, audit=audit, body=AuditUpdate(enabled=enabled)
        )
    except (ApiError, AdvauditError) as error:  # validation fails before anything is written
        status = error.status if isinstance(error, ApiError) else HTTPStatus.UNPROCESSABLE_ENTITY
        verb = "enabled" if enabled else "disabled"
        return _audit_page(
            request, session, audit, error=f"The audit could not be {verb}: {error}", status=status
        )
    return RedirectResponse(f"/audits/{audit.id}", status_code=HTTPStatus.SEE_OTHER)


@router.post("/audits/{audit_id}/enable", dependencies=[PageAuth, SameOrigin])
def enable(
    request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep, audit: PageAudit
) -> Response:
    return _set_enabled(request, session, store, settings, audit, True)


@router.post("/audits/{audit_id}/disable", dependencies=[PageAuth, SameOrigin])
def disable(
    request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep, audit: PageAudit
) -> Response:
    return _set_enabled(request, session, store, settings, audit, False)


@router.get("/audits/{audit_id}/delete", dependencies=[PageAuth])
def confirm_delete(request: Request, session: SessionDep, audit: PageAudit) -> Response:
    """The confirmation step: what goes (the audit, its runs) and what stays (jobs, reports)."""
    runs = run_service.run_count(session=session, audit=audit)
    return render(request, "audit_delete.html", {"audit": audit, "runs": runs})


@router.post("/audits/{audit_id}/delete", dependencies=[PageAuth, SameOrigin])
def delete(session: SessionDep, audit: PageAudit) -> Response:
    """Delete through the same use case as DELETE /api/v1/audits/{id}, then list the audits with a notice."""
    audit_service.delete_audit(session=session, audit=audit)
    return RedirectResponse("/audits?deleted=1", status_code=HTTPStatus.SEE_OTHER)
