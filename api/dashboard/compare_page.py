"""The compare page: pick jobs, or models on one dataset; the leaderboard is GET /api/v1/compare's."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.dashboard.auth import PageAuth
from api.dashboard.templating import render
from api.deps import SessionDep
from api.errors import ApiError, Unprocessable
from api.schemas import MAX_ID, CompareRead
from api.services import compare as compare_service
from api.services import dashboard as views
from api.services import is_decimal

router = APIRouter(include_in_schema=False)


def _ids(request: Request, key: str) -> str | None:
    """Checkboxes send key=1&key=2, links send key=1,2: both become "1,2" (None when absent)."""
    parts = [part.strip() for value in request.query_params.getlist(key) for part in value.split(",")]
    joined = ",".join(part for part in parts if part)
    return joined or None


def _chosen(text: str | None) -> set[str]:
    return set((text or "").split(",")) - {""}


@router.get("/compare", dependencies=[PageAuth])
def compare_page(request: Request, session: SessionDep) -> Response:
    job_ids, model_ids = _ids(request, "job_ids"), _ids(request, "model_ids")
    dataset_text = request.query_params.get("dataset_id", "").strip()
    context: dict[str, Any] = {
        "datasets": views.datasets(session=session),
        "models": views.models(session=session),
        "jobs": views.succeeded_jobs(session=session),
        "chosen_jobs": _chosen(job_ids),
        "chosen_models": _chosen(model_ids),
        "chosen_dataset": dataset_text,
        "result": None,
        "error": None,
    }
    asked = job_ids is not None or dataset_text != ""
    if model_ids and not dataset_text:
        context["error"] = "Choose the dataset the models were evaluated on."
    elif asked:
        try:
            dataset_id = _dataset_id(dataset_text) if job_ids is None else None
            document = compare_service.compare(
                session=session,
                job_ids=job_ids,
                dataset_id=dataset_id,
                model_ids=model_ids if job_ids is None else None,
            )
            context["result"] = CompareRead.model_validate(document).model_dump(mode="json")
        except ApiError as error:
            context["error"] = error.detail
    status = HTTPStatus.OK if context["error"] is None else HTTPStatus.UNPROCESSABLE_ENTITY
    return render(request, "compare.html", context, status_code=status)


def _dataset_id(text: str) -> int:
    if not is_decimal(text) or not 1 <= int(text) <= MAX_ID:
        raise Unprocessable(f"dataset {text!r} does not exist; pick one from the list")
    return int(text)
