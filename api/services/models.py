"""Model registration: streamed upload → de-duplication → isolated validation → artifact store → row."""

from __future__ import annotations

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.errors import Unprocessable
from api.schemas import ModelUploadForm
from api.services import page
from api.services.architecture import GRID_FILE, keep
from api.services.audit_runs import record_new_version
from api.services.references import receive_registration
from api.services.storage import store_and_create, upload_dir
from api.services.uploads import ReceivedUpload, parse_floats, parse_shape
from api.services.validation import run_isolated
from contracts.settings import Settings
from db import repositories as repo
from db.models import DatasetRecord, ModelRecord
from db.storage import ArtifactStore
from services.errors import CheckpointError

MODEL_SUFFIXES = (".pt2", ".pt", ".pth", ".ts", ".torchscript", ".safetensors")


async def upload_model(
    request: Request, *, session: Session, store: ArtifactStore, settings: Settings
) -> tuple[ModelRecord, bool]:
    """Register the uploaded checkpoint; (record, True) when new, (existing record, False) for a duplicate."""
    async with receive_registration(
        request,
        store=store,
        directory=upload_dir(settings),
        max_bytes=settings.max_upload_bytes,
        suffixes=MODEL_SUFFIXES,
        kind="model",
        form=ModelUploadForm,
    ) as (upload, form):
        return await run_in_threadpool(register_model, session=session, store=store, upload=upload, form=form)


def find(*, session: Session, model_id: int) -> ModelRecord | None:
    return repo.models.get(session=session, model_id=model_id)


def _dataset_for(session: Session, dataset_id: int | None) -> DatasetRecord | None:
    if dataset_id is None:
        return None
    dataset = repo.datasets.get(session=session, dataset_id=dataset_id)
    if dataset is None:
        raise Unprocessable(f"dataset_id {dataset_id}: there is no such dataset")
    return dataset


def _input_shape(form: ModelUploadForm, dataset: DatasetRecord | None) -> list[int]:
    if form.input_shape:
        return parse_shape(form.input_shape)
    if dataset is not None:
        return list(dataset.input_shape)
    raise Unprocessable(
        "the model is validated with one forward pass, which needs its input shape: give "
        "input_shape=C,H,W (e.g. 1,32,32) or dataset_id of a registered dataset it "
        "classifies"
    )


def _duplicate(
    session: Session,
    upload: ReceivedUpload,
    form: ModelUploadForm,
    shape: list[int],
    mean: list[float] | None,
    std: list[float] | None,
) -> ModelRecord | None:
    """A model with this name, the same bytes and the same load options (it was validated with them)."""
    for record in repo.models.list(session=session, name=form.name, sha256=upload.sha256):
        same = (
            record.arch == form.arch
            and list(record.input_shape) == shape
            and (form.num_classes is None or form.num_classes == record.num_classes)
            and (record.mean or None) == mean
            and (record.std or None) == std
        )
        if same:
            return record
    return None


def register_model(
    *, session: Session, store: ArtifactStore, upload: ReceivedUpload, form: ModelUploadForm
) -> tuple[ModelRecord, bool]:
    """Validate the upload in a child process and register it (a new version of `name`)."""
    mean, std = parse_floats(form.mean, "mean"), parse_floats(form.std, "std")
    dataset = _dataset_for(session, form.dataset_id)
    shape = _input_shape(form, dataset)
    existing = _duplicate(session, upload, form, shape, mean, std)
    if existing is not None:
        return existing, False
    grid = upload.path.parent / GRID_FILE  # the upload's own temporary folder, removed with it
    info = run_isolated(
        "model",
        {
            "path": str(upload.path),
            "input_shape": shape,
            "arch": form.arch,
            "num_classes": form.num_classes,
            "mean": mean,
            "std": std,
            "filter_grid_path": str(grid),
        },
        what=upload.filename,
        error=CheckpointError,
        aliases={str(upload.path): upload.filename},
    )
    names = dataset.class_names if dataset is not None else None
    class_names = names if names and len(names) == info["num_classes"] else None
    added: list[str] = []

    def create(key: str, size: int) -> ModelRecord:
        record = repo.models.create(
            session=session,
            name=form.name,
            sha256=upload.sha256,
            format=info["format"],
            num_classes=info["num_classes"],
            input_shape=info["input_shape"],
            storage_key=key,
            size_bytes=size,
            arch=info["arch"],
            class_names=class_names,
            mean=info["mean"],
            std=info["std"],
        )
        record_new_version(session=session, model=record)  # audits that follow this name: committed with it
        if "architecture" in info:  # else the model page computes it on first view, and says why if it cannot
            added.extend(
                keep(
                    session,
                    store,
                    sha256=upload.sha256,
                    input_shape=info["input_shape"],
                    result=info["architecture"],
                    grid_path=grid,
                )
            )
        return record

    try:
        record = store_and_create(session, store, upload.path, upload.sha256, create, upload.reference)
    except BaseException:
        for key in added:  # the grid PNG this registration stored: no row refers to it now
            store.delete(key)
        raise
    return record, True


def list_models(*, session: Session, name: str | None, limit: int, offset: int) -> dict:
    """A page of models (newest first) and the total count matching `name`."""
    rows = repo.models.list(session=session, name=name, limit=limit, offset=offset)
    return page(rows, repo.models.count(session=session, name=name), limit, offset)


def delete_model(*, session: Session, store: ArtifactStore, model: ModelRecord) -> None:
    """Delete an unused model (409 while jobs use it); its file goes too unless another row shares it."""
    key = model.storage_key
    repo.models.delete(session=session, model=model)
    # Commit first: a failed commit must not leave a row whose file was already removed.
    session.commit()
    if not repo.results.storage_key_in_use(session=session, storage_key=key):
        store.delete(key)
