"""The transfer job of an audit run (its candidates as the targets, the audit's sources as the sources)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from db.models import AuditRunTransfer
from db.transfer_models import TransferJob


def create(*, session: Session, run_id: int, transfer_job: TransferJob) -> AuditRunTransfer:
    link = AuditRunTransfer(run_id=run_id, transfer_job_id=transfer_job.id)
    session.add(link)
    session.flush()
    return link


def get(*, session: Session, run_id: int) -> TransferJob | None:
    """The transfer job run `run_id` launched, with its models and points (None: it launched none)."""
    return session.scalar(
        select(TransferJob)
        .join(AuditRunTransfer, AuditRunTransfer.transfer_job_id == TransferJob.id)
        .where(AuditRunTransfer.run_id == run_id)
        .options(selectinload(TransferJob.models), selectinload(TransferJob.points))
    )


def list(*, session: Session, run_ids: Iterable[int]) -> dict[int, TransferJob]:
    """Run id → its transfer job, for the given runs that launched one."""
    ids = [*run_ids]
    if not ids:
        return {}
    rows = session.execute(
        select(AuditRunTransfer.run_id, TransferJob)
        .join(TransferJob, AuditRunTransfer.transfer_job_id == TransferJob.id)
        .where(AuditRunTransfer.run_id.in_(ids))
    ).all()
    return {run_id: job for run_id, job in rows}


def run_id_for(*, session: Session, transfer_id: int) -> int | None:
    """The audit run that launched transfer job `transfer_id`, if any."""
    return session.scalar(
        select(AuditRunTransfer.run_id).where(AuditRunTransfer.transfer_job_id == transfer_id)
    )
