"""Transfer pages: the list, the form (through the same use case as POST /api/v1/transfer), the heat map."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from api.dashboard.auth import PageAuth, SameOrigin
from api.dashboard.errors import page_not_found
from api.dashboard.evaluation_form import form_messages
from api.dashboard.pages import record_id
from api.dashboard.templating import render
from api.deps import EnqueueTransferDep, SessionDep
from api.errors import ApiError
from api.services import dashboard as views
from api.services import transfers as service
from api.services.transfer_view import heat_map
from api.transfer_schemas import TransferCreate
from db.models import TransferJob
from services.errors import AdvauditError
from services.job_states import ACTIVE
from services.transfer_specs import TRANSFER_OPTIONS

router = APIRouter(include_in_schema=False)

DEFAULTS = {option.name: option.default_text for option in TRANSFER_OPTIONS}
LABELS = {
    "dataset_id": "Dataset",
    "source_ids": "Sources",
    "target_ids": "Targets",
    **{option.name: option.label for option in TRANSFER_OPTIONS},
}


def page_transfer(session: SessionDep, transfer_id: str) -> TransferJob:
    job = service.find(session=session, transfer_id=record_id(transfer_id, "Transfer job"))
    if job is None:
        raise page_not_found(f"Transfer job {transfer_id}")
    return job


PageTransfer = Annotated[TransferJob, Depends(page_transfer)]


@router.get("/transfers", dependencies=[PageAuth])
def transfers_page(request: Request, session: SessionDep) -> Response:
    listed = service.list_transfers(
        session=session, status=None, dataset_id=None, model_id=None, limit=100, offset=0
    )
    names = {d.id: d.name for d in views.datasets(session=session)}
    return render(request, "transfers.html", {"transfers": listed["data"], "dataset_names": names})


def _form(
    request: Request, session, values: dict[str, Any], errors: list[str], status: int = 200
) -> Response:
    context = {
        "values": values,
        "errors": errors,
        "transfer_options": TRANSFER_OPTIONS,
        "models": views.models(session=session),
        "datasets": views.datasets(session=session),
    }
    return render(request, "transfer_form.html", context, status_code=status)


@router.get("/transfers/new", dependencies=[PageAuth])
def new_transfer(request: Request, session: SessionDep) -> Response:
    values: dict[str, Any] = dict(DEFAULTS) | {"dataset_id": "", "source_ids": [], "target_ids": []}
    return _form(request, session, values, [])


@router.post("/transfers/new", dependencies=[PageAuth, SameOrigin])
async def submit_transfer(request: Request, session: SessionDep, enqueue: EnqueueTransferDep) -> Response:
    """Create the transfer job and go to its page; any bad value comes back as a message on the form."""
    form = await request.form()
    values: dict[str, Any] = {key: str(form.get(key, "")) for key in (*DEFAULTS, "dataset_id")}
    values["source_ids"] = [str(v) for v in form.getlist("source_ids")]
    values["target_ids"] = [str(v) for v in form.getlist("target_ids")]
    config = {key: values[key] for key in DEFAULTS if values[key].strip()}
    body = {
        "dataset_id": values["dataset_id"],
        "source_ids": values["source_ids"],
        "target_ids": values["target_ids"],
        "config": config,
    }
    try:
        parsed = TransferCreate.model_validate(body, strict=False)  # form values are text
        job = service.submit(
            session=session,
            enqueue=enqueue,
            dataset_id=parsed.dataset_id,
            source_ids=parsed.source_ids,
            target_ids=parsed.target_ids,
            options=parsed.config.evaluation_options(),
        )
    except ValidationError as error:
        return _form(request, session, values, form_messages(error, LABELS), HTTPStatus.UNPROCESSABLE_ENTITY)
    except (ApiError, AdvauditError) as error:
        status = error.status if isinstance(error, ApiError) else HTTPStatus.UNPROCESSABLE_ENTITY
        return _form(request, session, values, [str(error)], status)
    return RedirectResponse(f"/transfers/{job.id}", status_code=HTTPStatus.SEE_OTHER)


@router.get("/transfers/{transfer_id}", dependencies=[PageAuth])
def transfer_page(request: Request, session: SessionDep, transfer: PageTransfer) -> Response:
    results = service.results(session=session, transfer_job=transfer)
    query = request.query_params
    context = {
        "job": results,
        "dataset_name": {d.id: d.name for d in views.datasets(session=session)}.get(transfer.dataset_id, "?"),
        "live": transfer.status in ACTIVE,
        "map": heat_map(results, query.get("attack"), query.get("eps")),
    }
    return render(request, "transfer.html", context)
