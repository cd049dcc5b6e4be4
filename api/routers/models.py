"""/models: upload (multipart), list, read, architecture audit, filter grid, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse

from api.deps import ModelDep, SessionDep, SettingsDep, StoreDep
from api.schemas import MAX_ID, NO_NUL, UPLOAD_ERRORS, ModelRead, ModelUploadForm, Page, multipart_body
from api.services import architecture
from api.services import models as service

NameFilter = Annotated[str | None, Query(max_length=200, pattern=NO_NUL)]

router = APIRouter(prefix="/models", tags=["models"])


@router.post(
    "",
    response_model=ModelRead,
    status_code=201,
    openapi_extra=multipart_body(ModelUploadForm),
    responses=UPLOAD_ERRORS
    | {200: {"model": ModelRead, "description": "the same file and options were already registered"}},
)
async def create_model(
    request: Request, response: Response, session: SessionDep, store: StoreDep, settings: SettingsDep
):
    """Upload a checkpoint (field `file`); it is validated in an isolated process before it is stored."""
    model, created = await service.upload_model(request, session=session, store=store, settings=settings)
    if not created:
        response.status_code = 200
    return model


@router.get("", response_model=Page[ModelRead])
def list_models(
    session: SessionDep,
    name: NameFilter = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
):
    return service.list_models(session=session, name=name, limit=limit, offset=offset)


@router.get("/{model_id}", response_model=ModelRead)
def read_model(model: ModelDep):
    return model


@router.get(
    "/{model_id}/architecture",
    responses={200: {"description": 'the architecture audit: report.json\'s "architecture" section'}},
)
def read_architecture(
    model: ModelDep, session: SessionDep, store: StoreDep, settings: SettingsDep
) -> dict[str, Any]:
    """Conv layers (kind, geometry, params, MACs, receptive field), totals and CAM head, at the model's input size."""
    return architecture.architecture(session=session, store=store, settings=settings, model=model)


@router.get(
    "/{model_id}/filters.png",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}, "description": "first conv layer's filters"}},
)
def read_filter_grid(
    model: ModelDep, session: SessionDep, store: StoreDep, settings: SettingsDep
) -> FileResponse:
    """The first conv layer's filters as a PNG tile grid (404 for a model without conv layers)."""
    path = architecture.filter_grid(session=session, store=store, settings=settings, model=model)
    return FileResponse(path, media_type="image/png")


@router.delete("/{model_id}", status_code=204)
def delete_model(model: ModelDep, session: SessionDep, store: StoreDep) -> Response:
    """Delete a model no job uses (409 otherwise); its file goes unless another record shares it."""
    service.delete_model(session=session, store=store, model=model)
    return Response(status_code=204)
