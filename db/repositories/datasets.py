"""Registered datasets (uploaded archives and built-ins such as `digits`)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db.errors import RecordInUse
from db.models import DatasetRecord, Job, TransferJob
from db.repositories._common import DEFAULT_LIMIT, paginate, set_fields
from db.repositories._common import count as count_rows


def get(*, session: Session, dataset_id: int) -> DatasetRecord | None:
    return session.get(DatasetRecord, dataset_id)


def get_by_name(*, session: Session, name: str) -> DatasetRecord | None:
    return session.scalar(select(DatasetRecord).where(DatasetRecord.name == name))


def find_by_sha256(*, session: Session, sha256: str) -> DatasetRecord | None:
    return session.scalar(
        select(DatasetRecord).where(DatasetRecord.sha256 == sha256).order_by(DatasetRecord.id).limit(1)
    )


def _filtered(name: str | None, format: str | None) -> Select[DatasetRecord]:
    statement = select(DatasetRecord)
    if name is not None:
        statement = statement.where(DatasetRecord.name == name)
    if format is not None:
        statement = statement.where(DatasetRecord.format == format)
    return statement


def list(
    *,
    session: Session,
    name: str | None = None,
    format: str | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> Sequence[DatasetRecord]:
    return paginate(session, _filtered(name, format), DatasetRecord.id, limit=limit, offset=offset)


def count(*, session: Session, name: str | None = None, format: str | None = None) -> int:
    return count_rows(session, _filtered(name, format))


def create(
    *,
    session: Session,
    name: str,
    sha256: str,
    format: str,
    num_samples: int,
    input_shape: Sequence[int],
    num_classes: int,
    source: str,
    class_names: Sequence[str] | None = None,
    storage_key: str | None = None,
    size_bytes: int | None = None,
) -> DatasetRecord:
    """Add a dataset; a duplicate name fails the flush on the unique constraint."""
    record = DatasetRecord(
        name=name,
        sha256=sha256,
        format=format,
        num_samples=num_samples,
        input_shape=builtins.list(input_shape),
        num_classes=num_classes,
        class_names=None if class_names is None else builtins.list(class_names),
        storage_key=storage_key,
        size_bytes=size_bytes,
        source=source,
    )
    session.add(record)
    session.flush()
    return record


def update(*, session: Session, dataset: DatasetRecord, **fields: Any) -> DatasetRecord:
    set_fields(dataset, fields, protected=("id", "created_at"))
    session.flush()
    return dataset


def delete(*, session: Session, dataset: DatasetRecord) -> None:
    """Delete a dataset that no job uses (RecordInUse otherwise)."""
    used_by = session.scalar(select(func.count()).select_from(Job).where(Job.dataset_id == dataset.id)) or 0
    if used_by:
        raise RecordInUse(
            f"dataset {dataset.name} (id {dataset.id}) is used by {used_by} job(s); delete those jobs first"
        )
    in_transfers = session.scalar(
        select(func.count()).select_from(TransferJob).where(TransferJob.dataset_id == dataset.id)
    )
    if in_transfers:
        raise RecordInUse(
            f"dataset {dataset.name} (id {dataset.id}) is used by {in_transfers} transfer job(s); "
            "delete those transfer jobs first"
        )
    session.delete(dataset)
    session.flush()
