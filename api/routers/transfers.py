"""/transfer: submit a transfer matrix (source × target models on one dataset), list, read, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import EnqueueTransferDep, SessionDep, TransferDep
from api.schemas import MAX_ID, Page
from api.services import transfers as service
from api.transfer_schemas import TransferCreate, TransferRead, TransferResultsRead
from services.job_states import JobStatus

router = APIRouter(prefix="/transfer", tags=["transfer"])


@router.post("", response_model=TransferRead, status_code=201)
def create_transfer(body: TransferCreate, session: SessionDep, enqueue: EnqueueTransferDep):
    """Validate and queue a transfer job; 422 (nothing written) for unknown or incompatible models."""
    job = service.submit(
        session=session,
        enqueue=enqueue,
        dataset_id=body.dataset_id,
        source_ids=body.source_ids,
        target_ids=body.target_ids,
        options=body.config.evaluation_options(),
    )
    return service.read(session=session, transfer_job=job)


@router.get("", response_model=Page[TransferRead])
def list_transfers(
    session: SessionDep,
    status: JobStatus | None = None,
    dataset_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    model_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
):
    return service.list_transfers(
        session=session, status=status, dataset_id=dataset_id, model_id=model_id, limit=limit, offset=offset
    )


@router.get("/{transfer_id}", response_model=TransferResultsRead)
def read_transfer(transfer: TransferDep, session: SessionDep):
    """Status and, once succeeded, the matrix: a cell per (source, target, attack, ε) and the worst cases."""
    return service.results(session=session, transfer_job=transfer)


@router.post("/{transfer_id}/cancel", response_model=TransferRead)
def cancel_transfer(transfer: TransferDep, session: SessionDep):
    """Cancel a queued transfer job, or ask a running one to stop at its next batch; 409 once finished."""
    return service.cancel(session=session, transfer_job=transfer)


@router.delete("/{transfer_id}", status_code=204)
def delete_transfer(transfer: TransferDep, session: SessionDep) -> None:
    """Delete a finished transfer job and its matrix (409 while queued or running); its models can then go."""
    service.delete(session=session, transfer_job=transfer)
