"""/compare: a leaderboard of succeeded jobs on one dataset."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import SessionDep
from api.schemas import MAX_ID, CompareRead
from api.services import compare as service

router = APIRouter(prefix="/compare", tags=["compare"])


@router.get("", response_model=CompareRead)
def compare(
    session: SessionDep,
    job_ids: Annotated[str | None, Query(max_length=2000, description="e.g. 1,2,3")] = None,
    dataset_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    model_ids: Annotated[str | None, Query(max_length=2000, description="with dataset_id")] = None,
):
    """`job_ids`, or `dataset_id` (+ `model_ids`) for each model's latest succeeded job there.

    Rows are ranked by worst-case robust accuracy at `ranking_eps`, an ε every compared job swept (8/255
    when all did, else the largest nonzero shared ε); `worst_case_auc` and `fgsm_auc` are over the shared ε
    grid only. Each row carries its `sanity_verdict`: `suspicious` rows failed a sanity check.
    """
    return service.compare(session=session, job_ids=job_ids, dataset_id=dataset_id, model_ids=model_ids)
