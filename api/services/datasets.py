"""Dataset registration: the built-in `digits`, and streamed uploads validated in a child process."""

from __future__ import annotations

import functools

from fastapi import Request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.errors import Conflict, Unprocessable
from api.schemas import DatasetUploadForm
from api.services import page
from api.services.references import receive_registration
from api.services.storage import store_and_create, upload_dir
from api.services.uploads import ReceivedUpload
from api.services.validation import run_isolated
from contracts.settings import Settings
from db import repositories as repo
from db.models import DatasetRecord
from db.session import session_scope
from db.storage import ArtifactStore
from services.datasets import load_dataset
from services.errors import DatasetError

DATASET_SUFFIXES = (".npz", ".zip")
BUILTIN_DATASETS = ("digits",)


@functools.cache
def _builtin_info(name: str) -> dict:
    return load_dataset(name).info.to_dict()  # trusted, bundled data: loaded in-process


def ensure_builtin_datasets(sessions: sessionmaker[Session]) -> None:
    """Register `digits` (its test split) unless a dataset of that name exists."""
    for name in BUILTIN_DATASETS:
        with session_scope(sessions) as session:
            if repo.datasets.get_by_name(session=session, name=name) is not None:
                continue
        info = _builtin_info(name)
        try:
            with session_scope(sessions) as session:
                repo.datasets.create(
                    session=session,
                    name=name,
                    sha256=info["sha256"],
                    format=info["format"],
                    num_samples=info["num_samples"],
                    input_shape=info["input_shape"],
                    num_classes=info["num_classes"],
                    class_names=info["class_names"],
                    source=info["source"],
                )
        except IntegrityError:  # another API process registered it at the same moment
            pass


async def upload_dataset(
    request: Request, *, session: Session, store: ArtifactStore, settings: Settings
) -> tuple[DatasetRecord, bool]:
    """Register the uploaded dataset; (record, True) when new, (existing record, False) for a re-upload."""
    async with receive_registration(
        request,
        store=store,
        directory=upload_dir(settings),
        max_bytes=settings.max_upload_bytes,
        suffixes=DATASET_SUFFIXES,
        kind="dataset",
        form=DatasetUploadForm,
    ) as (upload, form):
        return await run_in_threadpool(
            register_dataset, session=session, store=store, upload=upload, form=form
        )


def _same_upload(record: DatasetRecord, upload: ReceivedUpload, form: DatasetUploadForm) -> bool:
    size = form.image_size
    return record.sha256 == upload.sha256 and (size is None or list(record.input_shape[1:]) == [size, size])


def _check_servable(info: dict, upload: ReceivedUpload, form: DatasetUploadForm) -> None:
    """Refuse what the worker could not reproduce: it re-opens stored files with only the recorded shape."""
    if info["format"] == "npz" and form.image_size is not None:
        raise Unprocessable(
            "image_size only applies to ImageFolder .zip datasets; an .npz is used at its own size"
        )
    _, height, width = info["input_shape"]
    if info["format"].startswith("imagefolder") and height != width:
        raise Unprocessable(
            f"{upload.filename}: the images are {width}×{height}; give image_size=N to "
            "evaluate them resized to N×N"
        )


def register_dataset(
    *, session: Session, store: ArtifactStore, upload: ReceivedUpload, form: DatasetUploadForm
) -> tuple[DatasetRecord, bool]:
    """Validate the upload in a child process and register it under its (unique) name."""
    existing = repo.datasets.get_by_name(session=session, name=form.name)
    if existing is not None:
        if _same_upload(existing, upload, form):
            return existing, False
        raise Conflict(
            f"a dataset named {form.name!r} already exists (id {existing.id}) with other content "
            "or image size; choose another name"
        )
    info = run_isolated(
        "dataset",
        {"path": str(upload.path), "image_size": form.image_size},
        what=upload.filename,
        error=DatasetError,
        aliases={str(upload.path): upload.filename},
    )
    _check_servable(info, upload, form)

    def create(key: str, size: int) -> DatasetRecord:
        return repo.datasets.create(
            session=session,
            name=form.name,
            sha256=upload.sha256,
            format=info["format"],
            num_samples=info["num_samples"],
            input_shape=info["input_shape"],
            num_classes=info["num_classes"],
            class_names=info["class_names"],
            source=upload.filename,
            storage_key=key,
            size_bytes=size,
        )

    record = store_and_create(session, store, upload.path, upload.sha256, create, upload.reference)
    return record, True


def list_datasets(*, session: Session, name: str | None, limit: int, offset: int) -> dict:
    """A page of datasets (newest first) and the total count matching `name`."""
    rows = repo.datasets.list(session=session, name=name, limit=limit, offset=offset)
    return page(rows, repo.datasets.count(session=session, name=name), limit, offset)
