"""/datasets: upload (multipart), list, read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.deps import DatasetDep, SessionDep, SettingsDep, StoreDep
from api.schemas import (
    MAX_ID,
    NO_NUL,
    UPLOAD_ERRORS,
    DatasetRead,
    DatasetUploadForm,
    Page,
    multipart_body,
)
from api.services import datasets as service

NameFilter = Annotated[str | None, Query(max_length=200, pattern=NO_NUL)]

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.post(
    "",
    response_model=DatasetRead,
    status_code=201,
    openapi_extra=multipart_body(DatasetUploadForm),
    responses=UPLOAD_ERRORS
    | {200: {"model": DatasetRead, "description": "the same file was already registered under this name"}},
)
async def create_dataset(
    request: Request, response: Response, session: SessionDep, store: StoreDep, settings: SettingsDep
):
    """Upload an .npz or ImageFolder .zip (field `file`), validated in an isolated process, then stored."""
    dataset, created = await service.upload_dataset(request, session=session, store=store, settings=settings)
    if not created:
        response.status_code = 200
    return dataset


@router.get("", response_model=Page[DatasetRead])
def list_datasets(
    session: SessionDep,
    name: NameFilter = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
):
    return service.list_datasets(session=session, name=name, limit=limit, offset=offset)


@router.get("/{dataset_id}", response_model=DatasetRead)
def read_dataset(dataset: DatasetDep):
    return dataset
