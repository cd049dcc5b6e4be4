"""Transfer jobs: validate → write → commit → enqueue, cancel, list, and the matrix as the API shows it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from api.errors import Conflict, ServiceUnavailable, Unprocessable
from api.services import page
from api.services.jobs import DEVICE_TYPES
from contracts.tasks import queue_for
from db import repositories as repo
from db.models import DatasetRecord, ModelRecord, TransferJob
from services.errors import ConfigError
from services.job_states import ACTIVE, FAILED, QUEUED, SUCCEEDED
from services.transfer_specs import ModelShape, TransferConfig, check_compatible, check_roles

EnqueueTransfer = Callable[[TransferJob], None]


def find(*, session: Session, transfer_id: int) -> TransferJob | None:
    return repo.transfers.get(session=session, transfer_id=transfer_id)


def build_config(options: dict[str, Any]) -> TransferConfig:
    """TransferConfig from the request's options; an invalid value becomes a ConfigError (422)."""
    try:
        config = TransferConfig(**options)
    except TypeError as error:
        raise ConfigError(f"invalid transfer options: {error}") from None
    kind = config.device.split(":", 1)[0].strip().lower()
    if config.device != "auto" and kind not in DEVICE_TYPES:
        raise ConfigError(f"unknown device {config.device!r}; use auto, cpu, cuda, cuda:N or mps")
    return config


def _models(session: Session, ids: list[int]) -> list[ModelRecord]:
    found = []
    for model_id in ids:
        model = repo.models.get(session=session, model_id=model_id)
        if model is None:
            raise Unprocessable(f"model_id {model_id}: there is no such model")
        found.append(model)
    return found


def label(model: ModelRecord) -> str:
    return f"{model.name} {model.version}"


def submit(
    *,
    session: Session,
    enqueue: EnqueueTransfer,
    dataset_id: int,
    source_ids: list[int],
    target_ids: list[int],
    options: dict[str, Any],
) -> TransferJob:
    """Validate every input (422 with its message, nothing written), write the queued job, COMMIT, enqueue."""
    check_roles([str(i) for i in source_ids], [str(i) for i in target_ids])
    dataset: DatasetRecord | None = repo.datasets.get(session=session, dataset_id=dataset_id)
    if dataset is None:
        raise Unprocessable(f"dataset_id {dataset_id}: there is no such dataset")
    config = build_config(options)
    models = {m.id: m for m in _models(session, [*source_ids, *target_ids])}
    check_compatible(
        [ModelShape(label(m), tuple(m.input_shape), m.num_classes) for m in models.values()],
        dataset.name,
        tuple(dataset.input_shape),
        dataset.num_classes,
    )
    job = repo.transfers.create(
        session=session,
        dataset_id=dataset.id,
        source_ids=source_ids,
        target_ids=target_ids,
        config=config.to_dict(),
        queue=queue_for(config.device),
    )
    session.commit()
    try:
        enqueue(job)
    except Exception as error:  # broker down: the job must not sit "queued" forever
        reason = f"broker unavailable: {type(error).__name__}: {error}".strip()
        session.refresh(job)
        if job.status == QUEUED:
            repo.transfers.transition(session=session, transfer_job=job, new_status=FAILED, error=reason)
            session.commit()
        raise ServiceUnavailable(
            f"transfer job {job.id} could not be queued ({reason}); it was marked failed"
        ) from None
    return job


def cancel(*, session: Session, transfer_job: TransferJob) -> dict[str, Any]:
    """Cancel a queued job now, or flag a running one (409 for a finished job)."""
    return read(
        session=session,
        transfer_job=repo.transfers.request_cancel(session=session, transfer_job=transfer_job),
    )


def delete(*, session: Session, transfer_job: TransferJob) -> None:
    """Delete a finished transfer job with its matrix (409 while it is queued or running: cancel it first)."""
    if transfer_job.status in ACTIVE:
        raise Conflict(
            f"transfer job {transfer_job.id} is {transfer_job.status}; cancel it before deleting it"
        )
    run_id = repo.audit_transfers.run_id_for(session=session, transfer_id=transfer_job.id)
    if run_id is not None:
        raise Conflict(
            f"transfer job {transfer_job.id} holds the black-box results of audit run {run_id}; "
            "delete the audit to delete it"
        )
    repo.transfers.delete(session=session, transfer_job=transfer_job)


def _model_entries(session: Session, ids: list[int]) -> list[dict[str, Any]]:
    entries = []
    for model_id in ids:
        model = repo.models.get(session=session, model_id=model_id)
        assert model is not None  # RESTRICT: a model in a transfer job cannot be deleted
        entries.append({"id": model.id, "name": model.name, "version": model.version})
    return entries


def read(*, session: Session, transfer_job: TransferJob) -> dict[str, Any]:
    """The job's row with its models by role."""
    columns = [
        "id",
        "dataset_id",
        "status",
        "progress",
        "attempts",
        "error",
        "lost_reason",
        "queue",
        "config",
        "cancel_requested",
        "worker_host",
        "created_at",
        "started_at",
        "finished_at",
    ]
    return {name: getattr(transfer_job, name) for name in columns} | {
        "sources": _model_entries(session, transfer_job.model_ids("source")),
        "targets": _model_entries(session, transfer_job.model_ids("target")),
    }


def results(*, session: Session, transfer_job: TransferJob) -> dict[str, Any]:
    """The job with its matrix (empty until it succeeded): the cells, and each target's worst cases."""
    cells, worst = [], []
    if transfer_job.status == SUCCEEDED:
        for point in transfer_job.points:
            values = {
                "target_model_id": point.target_model_id,
                "attack": point.attack,
                "eps": point.eps,
                "accuracy": point.accuracy,
                "success_rate": point.success_rate,
                "n": point.n,
            }
            if point.source_model_id is None:
                worst.append(values)
            else:
                white_box = point.source_model_id == point.target_model_id
                cells.append(values | {"source_model_id": point.source_model_id, "white_box": white_box})
    return read(session=session, transfer_job=transfer_job) | {"cells": cells, "worst_case": worst}


def list_transfers(
    *,
    session: Session,
    status: str | None,
    dataset_id: int | None,
    model_id: int | None,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    filters = {"status": status, "dataset_id": dataset_id, "model_id": model_id}
    rows = repo.transfers.list(session=session, **filters, limit=limit, offset=offset)
    count = repo.transfers.count(session=session, **filters)
    return page([read(session=session, transfer_job=row) for row in rows], count, limit, offset)


def black_box(*, session: Session, model_ids: list[int], dataset_id: int | None) -> dict[int, dict[str, Any]]:
    """Per model: its newest succeeded transfer job on the dataset as a target with other sources, and its
    worst-case accuracy there by ε (rounded to 9 digits): per sample over the other sources and every attack."""
    table: dict[int, dict[str, Any]] = {}
    for point in repo.transfers.worst_points(session=session, target_ids=model_ids, dataset_id=dataset_id):
        entry = table.setdefault(point.target_model_id, {"job_id": point.transfer_job_id, "accuracy": {}})
        entry["accuracy"][round(point.eps, 9)] = point.accuracy
    return table
