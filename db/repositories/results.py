"""A job's results: sweep points and CAM audit from its report, artifacts, cached architecture audits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import (
    ArchitectureAuditRecord,
    Artifact,
    CamAuditRecord,
    DatasetRecord,
    Job,
    ModelRecord,
    SweepPoint,
)

_CAM_FIELDS = (
    "method",
    "layer",
    "eps",
    "num_samples",
    "mean_similarity",
    "mean_top20_iou",
    "mean_confidence_drop",
    "drift",
)


def sweep_rows(report_document: dict[str, Any]) -> list[dict[str, Any]]:
    """The sweep_points rows a report.json document describes."""
    rows = [
        {
            "attack": "fgsm",
            "policy": None,
            "eps": p["eps"],
            "accuracy": p["accuracy"],
            "attack_success_rate": p.get("attack_success_rate"),
            "mean_confidence": p.get("mean_confidence"),
        }
        for p in report_document.get("fgsm") or []
    ]
    targeted = report_document.get("targeted_fgsm")
    if targeted:
        rows += [
            {
                "attack": "targeted_fgsm",
                "policy": targeted.get("policy"),
                "eps": p["eps"],
                "accuracy": p["accuracy"],
                "target_success_rate": p.get("target_success_rate"),
                "mean_target_probability": p.get("mean_target_probability"),
            }
            for p in targeted.get("points") or []
        ]
    return rows


def replace_results(*, session: Session, job: Job, report_document: dict[str, Any]) -> Job:
    """Store the report and its sweep points / CAM audit, replacing any earlier set (idempotent)."""
    session.execute(sql_delete(SweepPoint).where(SweepPoint.job_id == job.id))
    session.execute(sql_delete(CamAuditRecord).where(CamAuditRecord.job_id == job.id))
    # Deleted by statement, so the loaded collections would still show the old rows.
    session.expire(job, ["sweep_points", "cam_audit"])
    session.add_all(SweepPoint(job_id=job.id, **row) for row in sweep_rows(report_document))
    cam = report_document.get("gradcam")
    if cam:
        session.add(CamAuditRecord(job_id=job.id, **{key: cam.get(key) for key in _CAM_FIELDS}))
    job.report = report_document
    session.flush()
    return job


def sweep_points(*, session: Session, job_id: int, attack: str | None = None) -> Sequence[SweepPoint]:
    statement = select(SweepPoint).where(SweepPoint.job_id == job_id)
    if attack is not None:
        statement = statement.where(SweepPoint.attack == attack)
    return session.scalars(statement.order_by(SweepPoint.attack, SweepPoint.eps)).all()


def cam_audit(*, session: Session, job_id: int) -> CamAuditRecord | None:
    return session.scalar(select(CamAuditRecord).where(CamAuditRecord.job_id == job_id))


# --- artifacts ---------------------------------------------------------------------------------------------


def put_artifact(
    *, session: Session, job: Job, name: str, kind: str, storage_key: str, sha256: str, size_bytes: int
) -> Artifact:
    """Insert or replace the artifact `name` of `job` (a redelivered task rewrites it, never duplicates)."""
    artifact = get_artifact(session=session, job_id=job.id, name=name)
    if artifact is None:
        artifact = Artifact(job_id=job.id, name=name)
        session.add(artifact)
    artifact.kind, artifact.storage_key = kind, storage_key
    artifact.sha256, artifact.size_bytes = sha256, size_bytes
    session.flush()
    return artifact


def get_artifact(*, session: Session, job_id: int, name: str) -> Artifact | None:
    return session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))


def list_artifacts(*, session: Session, job_id: int) -> Sequence[Artifact]:
    return session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)).all()


def delete_artifact(*, session: Session, artifact: Artifact) -> None:
    session.delete(artifact)
    session.flush()


def storage_key_in_use(*, session: Session, storage_key: str) -> bool:
    """Whether any row still refers to a stored object (content addressing shares identical files)."""
    for column in (ModelRecord.storage_key, DatasetRecord.storage_key, Artifact.storage_key, Job.result_key):
        if session.scalar(select(column).where(column == storage_key).limit(1)) is not None:
            return True
    return False


# --- architecture audits (cached per model sha256 and input shape) ---------------------------------------


def shape_key(input_shape: Sequence[int] | str) -> str:
    """(C, H, W) → "C,H,W"."""
    return input_shape if isinstance(input_shape, str) else ",".join(str(int(n)) for n in input_shape)


def get_architecture_audit(
    *, session: Session, model_sha256: str, input_shape: Sequence[int] | str
) -> ArchitectureAuditRecord | None:
    return session.scalar(
        select(ArchitectureAuditRecord).where(
            ArchitectureAuditRecord.model_sha256 == model_sha256,
            ArchitectureAuditRecord.input_shape == shape_key(input_shape),
        )
    )


def store_architecture_audit(
    *, session: Session, model_sha256: str, input_shape: Sequence[int] | str, document: dict[str, Any]
) -> ArchitectureAuditRecord:
    """Get the cached audit, or store `document` (ArchitectureAudit.to_dict()) as it."""
    record = get_architecture_audit(session=session, model_sha256=model_sha256, input_shape=input_shape)
    if record is not None:
        return record
    totals = document.get("totals") or {}
    record = ArchitectureAuditRecord(
        model_sha256=model_sha256,
        input_shape=shape_key(input_shape),
        document=document,
        params=totals.get("params"),
        macs=totals.get("macs"),
    )
    session.add(record)
    session.flush()
    return record
