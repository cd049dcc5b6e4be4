"""Job submission (validate → write → commit → enqueue), cancel, rerun, report and artifacts."""

from __future__ import annotations

import math
import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session

from api.errors import Conflict, NotFound, ServiceUnavailable, Unprocessable
from api.services import page
from api.services.architecture import model_file
from api.services.storage import local_copy
from api.services.validation import run_isolated
from contracts.tasks import queue_for
from db import repositories as repo
from db.models import Artifact, DatasetRecord, Job, JobShard, ModelRecord
from db.storage import ArtifactStore
from services.errors import ConfigError
from services.features import TORCHSCRIPT_REFUSAL
from services.job_states import FAILED, QUEUED, SUCCEEDED
from services.sharding import planned_ranges
from services.specs import EvaluationConfig

Enqueue = Callable[[Job], None]
DEVICE_TYPES = ("cpu", "cuda", "mps")
MEDIA_TYPES = {".json": "application/json", ".png": "image/png", ".npz": "application/octet-stream"}


def find(*, session: Session, job_id: int) -> Job | None:
    return repo.jobs.get(session=session, job_id=job_id)


def build_config(options: dict[str, Any]) -> EvaluationConfig:
    """EvaluationConfig from the request's options; every invalid value becomes a ConfigError (422)."""
    try:
        config = EvaluationConfig(**options)
    except TypeError as error:  # a stored config from an older version, with options this one lacks
        raise ConfigError(f"invalid evaluation options: {error}") from None
    if config.device != "auto":
        try:
            device = torch.device(config.device)
        except (RuntimeError, TypeError):
            device = None
        if device is None or device.type not in DEVICE_TYPES:
            raise ConfigError(f"unknown device {config.device!r}; use auto, cpu, cuda, cuda:N or mps")
    return config


def check_compatible(model: ModelRecord, dataset: DatasetRecord, config: EvaluationConfig) -> None:
    """The model was validated for one input shape; the dataset's images and labels must fit it."""
    if list(model.input_shape) != list(dataset.input_shape):
        raise Unprocessable(
            f"model {model.name} {model.version} was validated for inputs of shape "
            f"{tuple(model.input_shape)} (C, H, W) but dataset {dataset.name} has images of shape "
            f"{tuple(dataset.input_shape)}; register the model with input_shape (or dataset_id) matching the "
            "dataset"
        )
    if dataset.num_classes > model.num_classes:
        raise Unprocessable(
            f"dataset {dataset.name} has {dataset.num_classes} classes but model {model.name} "
            f"{model.version} predicts only {model.num_classes}; check that they use the same classes"
        )
    target = config.targeted
    if target is not None and target.kind == "class" and target.target_class >= model.num_classes:
        raise ConfigError(
            f"targeted class:{target.target_class} is outside the model's {model.num_classes} "
            f"classes (0…{model.num_classes - 1})"
        )


def check_cam_layer(
    session: Session,
    store: ArtifactStore,
    model: ModelRecord,
    dataset: DatasetRecord,
    config: EvaluationConfig,
) -> None:
    """A Grad-CAM layer path must exist and give a spatial map: the cached audit, else a child process."""
    if config.cam in ("auto", "none"):
        return
    if model.format == "torchscript":
        raise ConfigError(
            "TorchScript archives do not support the hooks a CAM audit needs: use cam auto or "
            "none, or register the weights with arch, or a torch.export (.pt2) archive"
        )
    cached = repo.results.get_architecture_audit(
        session=session, model_sha256=model.sha256, input_shape=dataset.input_shape
    )
    if cached is not None:
        layers = cached.document.get("layers", [])
        layer = next((item for item in layers if item.get("name") == config.cam), None)
        spatial = layer is not None and layer.get("spatial_dims", 2) == 2
        if spatial and math.prod(layer["output_shape"][1:]) >= 2:
            return
    with model_file(store, model) as path:
        result = run_isolated(
            "cam_layer",
            {
                "path": str(path),
                "input_shape": list(dataset.input_shape),
                "layer": config.cam,
                "arch": model.arch,
                "num_classes": model.num_classes if model.arch else None,
                "mean": model.mean,
                "std": model.std,
            },
            what=f"model {model.name} {model.version}",
            error=ConfigError,
        )
    repo.results.store_architecture_audit(
        session=session, model_sha256=model.sha256, input_shape=dataset.input_shape, document=result["audit"]
    )


def check_feature_layers(
    store: ArtifactStore, model: ModelRecord, dataset: DatasetRecord, config: EvaluationConfig
) -> None:
    """Named feature layers must exist in the model, run once and output maps (checked in a child process),
    so that a sharded job does not learn it only when its shards are merged."""
    if not config.feature_layers:
        return
    if model.format == "torchscript":
        raise ConfigError(TORCHSCRIPT_REFUSAL)
    with model_file(store, model) as path:
        run_isolated(
            "feature_layers",
            {
                "path": str(path),
                "input_shape": list(dataset.input_shape),
                "layers": config.feature_layers.split(","),
                "arch": model.arch,
                "num_classes": model.num_classes if model.arch else None,
                "mean": model.mean,
                "std": model.std,
            },
            what=f"model {model.name} {model.version}",
            error=ConfigError,
        )


def check_shards(dataset: DatasetRecord, config: EvaluationConfig) -> None:
    """A shard count the job's samples can be cut into (whole batches); ConfigError (422) otherwise."""
    if config.shards is not None:
        planned_ranges(config.shards, dataset.num_samples, config.limit, config.batch_size, 0)


def _loaded(session: Session, model_id: int, dataset_id: int) -> tuple[ModelRecord, DatasetRecord]:
    model = repo.models.get(session=session, model_id=model_id)
    if model is None:
        raise Unprocessable(f"model_id {model_id}: there is no such model")
    dataset = repo.datasets.get(session=session, dataset_id=dataset_id)
    if dataset is None:
        raise Unprocessable(f"dataset_id {dataset_id}: there is no such dataset")
    return model, dataset


def submit(
    *,
    session: Session,
    store: ArtifactStore,
    enqueue: Enqueue,
    model_id: int,
    dataset_id: int,
    options: dict[str, Any],
) -> Job:
    """Validate, write the queued job, COMMIT, then enqueue its id (a worker must find the row)."""
    model, dataset = _loaded(session, model_id, dataset_id)
    config = build_config(options)
    check_compatible(model, dataset, config)
    check_shards(dataset, config)
    check_cam_layer(session, store, model, dataset, config)
    check_feature_layers(store, model, dataset, config)
    job = repo.jobs.create(
        session=session,
        model_id=model.id,
        dataset_id=dataset.id,
        config=config.to_dict(),
        queue=queue_for(config.device),
    )
    session.commit()
    try:
        enqueue(job)
    except Exception as error:  # broker down or refusing: the job must not sit "queued" forever
        _withdraw(session, job, error)
    return job


def _withdraw(session: Session, job: Job, error: Exception) -> None:
    reason = f"broker unavailable: {type(error).__name__}: {error}".strip()
    session.refresh(job)
    # A worker that did get the message and already claimed the job keeps it.
    if job.status == QUEUED:
        repo.jobs.transition(session=session, job=job, new_status=FAILED, error=reason)
        session.commit()
    raise ServiceUnavailable(
        f"job {job.id} could not be queued ({reason}); it was marked cancelled: rerun "
        f"it (POST /api/v1/jobs/{job.id}/rerun) once the broker is reachable",
        job_id=job.id,
    )


def rerun(*, session: Session, store: ArtifactStore, enqueue: Enqueue, job: Job) -> Job:
    """A new job with the same model, dataset and (normalised) config."""
    return submit(
        session=session,
        store=store,
        enqueue=enqueue,
        model_id=job.model_id,
        dataset_id=job.dataset_id,
        options=dict(job.config),
    )


def cancel(*, session: Session, job: Job) -> Job:
    """Cancel a queued job now, or flag a running one (409 for a finished job)."""
    return repo.jobs.request_cancel(session=session, job=job)


def list_jobs(
    *,
    session: Session,
    status: str | None,
    model_id: int | None,
    dataset_id: int | None,
    limit: int,
    offset: int,
) -> dict:
    """A page of jobs (newest first) and the total count matching the filters."""
    filters = {"status": status, "model_id": model_id, "dataset_id": dataset_id}
    rows = repo.jobs.list(session=session, **filters, limit=limit, offset=offset)
    return page(rows, repo.jobs.count(session=session, **filters), limit, offset)


def report(job: Job) -> dict[str, Any]:
    """The job's report.json document, exactly as the worker stored it (409 until it succeeded)."""
    if job.status != SUCCEEDED or job.report is None:
        raise Conflict(f"job {job.id} is {job.status}; its report exists once it has succeeded")
    return job.report


def shards(*, session: Session, job: Job) -> list[JobShard]:
    return list(repo.shards.list(session=session, job_id=job.id))


def artifacts(*, session: Session, job: Job) -> list[Artifact]:
    return list(repo.results.list_artifacts(session=session, job_id=job.id))


def artifact_file(*, session: Session, store: ArtifactStore, job: Job, name: str) -> tuple[Path, str]:
    """(local path, media type) of the artifact `name` of `job` (404 when unknown or missing)."""
    artifact = repo.results.get_artifact(session=session, job_id=job.id, name=name)
    if artifact is None:
        raise NotFound(
            f"job {job.id} has no artifact {name!r}; GET /api/v1/jobs/{job.id}/artifacts lists them"
        )
    missing = NotFound(f"the file of artifact {name!r} of job {job.id} is missing from the artifact store")
    suffix = Path(name).suffix.lower()
    media_type = MEDIA_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    with local_copy(store, artifact.storage_key, missing) as path:
        # Served after the block: the cache keeps an entry it just handed out (db.file_cache.RECENT_USE_S).
        return path, media_type
