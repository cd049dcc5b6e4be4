"""Registered checkpoints: version tags per name, lookup by content hash."""

from __future__ import annotations

import builtins
import re
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db.errors import RecordInUse
from db.models import Job, ModelRecord, TransferJobModel
from db.repositories._common import DEFAULT_LIMIT, paginate, set_fields
from db.repositories._common import count as count_rows

_VERSION = re.compile(r"v(\d+)")
_V = TypeVar("_V")


def get(*, session: Session, model_id: int) -> ModelRecord | None:
    return session.get(ModelRecord, model_id)


def get_by_name(*, session: Session, name: str, version: str | None = None) -> ModelRecord | None:
    """The given version of `name`, or its newest one when `version` is None."""
    statement = select(ModelRecord).where(ModelRecord.name == name)
    if version is not None:
        return session.scalar(statement.where(ModelRecord.version == version))
    return session.scalar(statement.order_by(ModelRecord.id.desc()).limit(1))


def find_by_sha256(*, session: Session, sha256: str, name: str | None = None) -> ModelRecord | None:
    """The oldest record holding this exact file (optionally under `name`): the de-duplication lookup."""
    statement = select(ModelRecord).where(ModelRecord.sha256 == sha256)
    if name is not None:
        statement = statement.where(ModelRecord.name == name)
    return session.scalar(statement.order_by(ModelRecord.id).limit(1))


def _filtered(name: str | None, sha256: str | None) -> Select[ModelRecord]:
    statement = select(ModelRecord)
    if name is not None:
        statement = statement.where(ModelRecord.name == name)
    if sha256 is not None:
        statement = statement.where(ModelRecord.sha256 == sha256)
    return statement


def list(
    *,
    session: Session,
    name: str | None = None,
    sha256: str | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> Sequence[ModelRecord]:
    return paginate(session, _filtered(name, sha256), ModelRecord.id, limit=limit, offset=offset)


def count(*, session: Session, name: str | None = None, sha256: str | None = None) -> int:
    return count_rows(session, _filtered(name, sha256))


def next_version(*, session: Session, name: str) -> str:
    """ "v1" for a new name, else one past the highest "vN" tag the name already has."""
    tags = session.scalars(select(ModelRecord.version).where(ModelRecord.name == name))
    numbers = [int(m.group(1)) for tag in tags if (m := _VERSION.fullmatch(tag))]
    return f"v{max(numbers, default=0) + 1}"


def create(
    *,
    session: Session,
    name: str,
    sha256: str,
    format: str,
    num_classes: int,
    input_shape: Sequence[int],
    storage_key: str,
    size_bytes: int,
    arch: str | None = None,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    version: str | None = None,
) -> ModelRecord:
    """Add a model; without `version` it gets the next "vN" tag of its name.

    Two concurrent uploads under one name can pick the same tag: the second flush then fails on the
    (name, version) unique constraint, and the caller's transaction rolls back (answer 409 / retry).
    """
    record = ModelRecord(
        name=name,
        version=version or next_version(session=session, name=name),
        sha256=sha256,
        format=format,
        arch=arch,
        num_classes=num_classes,
        class_names=_opt_list(class_names),
        input_shape=builtins.list(input_shape),
        mean=_opt_list(mean),
        std=_opt_list(std),
        storage_key=storage_key,
        size_bytes=size_bytes,
    )
    session.add(record)
    session.flush()
    return record


def update(*, session: Session, model: ModelRecord, **fields: Any) -> ModelRecord:
    set_fields(model, fields, protected=("id", "sha256", "storage_key", "size_bytes", "created_at"))
    session.flush()
    return model


def delete(*, session: Session, model: ModelRecord) -> None:
    """Delete a model that no job uses (RecordInUse otherwise); the stored file is the caller's to drop."""
    used_by = session.scalar(select(func.count()).select_from(Job).where(Job.model_id == model.id)) or 0
    if used_by:
        raise RecordInUse(
            f"model {model.name} {model.version} (id {model.id}) is used by {used_by} job(s); "
            "delete those jobs first"
        )
    in_transfers = session.scalar(
        select(func.count(func.distinct(TransferJobModel.transfer_job_id))).where(
            TransferJobModel.model_id == model.id
        )
    )
    if in_transfers:
        raise RecordInUse(
            f"model {model.name} {model.version} (id {model.id}) is used by {in_transfers} transfer job(s); "
            "delete those transfer jobs first"
        )
    session.delete(model)
    session.flush()


def _opt_list(values: Sequence[_V] | None) -> builtins.list[_V] | None:
    return None if values is None else builtins.list(values)
