"""The transfer job of an audit run: launched beside its evaluation jobs (the audit's sources against the
candidates, on the audit's dataset and ε list), awaited by finalize, and read into the verdict's transfer metric.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.orm import Session

from contracts.tasks import queue_for
from db import repositories as repo
from db.models import Audit, AuditRun, DatasetRecord, ModelRecord
from db.transfer_models import TransferJob
from services.audit_transfer import TransferOutcome, eps_key
from services.audit_verdict import JobResult
from services.errors import AdvauditError
from services.specs import EvaluationConfig
from services.transfer_specs import (
    ALL_ATTACKS,
    MAX_TRANSFER_MODELS,
    ModelShape,
    TransferConfig,
    check_compatible,
)

Pair = tuple[JobResult, JobResult | None]


def _label(model: ModelRecord) -> str:
    return f"{model.name} {model.version}"


def transfer_config(config: EvaluationConfig) -> TransferConfig:
    """The audit's evaluation settings the transfer job shares: ε list, PGD steps, samples, device, seed."""
    return TransferConfig(
        eps=config.eps,
        steps=config.steps,
        restarts=config.restarts,
        step_size=config.step_size,
        limit=config.limit,
        batch_size=config.batch_size,
        device=config.device,
        precision=config.precision,
        seed=config.seed,
    )


def plan_sources(
    session: Session, audit: Audit, dataset: DatasetRecord, candidates: list[ModelRecord]
) -> list[ModelRecord]:
    """The audit's transfer sources, checked against its dataset and candidates (ValueError says why not)."""
    sources = []
    for model_id in audit.transfer_source_ids or []:
        model = repo.models.get(session=session, model_id=model_id)
        if model is None:
            raise ValueError(f"transfer source model {model_id} no longer exists; edit the audit's sources")
        sources.append(model)
    both = sorted({m.id for m in sources} & {m.id for m in candidates})
    if both:
        raise ValueError(
            f"transfer source model {both[0]} is also a model this run audits (a model's black-box robustness "
            "is measured against the other models); edit the audit's sources"
        )
    if sources and len(candidates) > MAX_TRANSFER_MODELS:
        raise ValueError(
            f"a transfer job takes at most {MAX_TRANSFER_MODELS} targets; this run has {len(candidates)} models"
        )
    shapes = [ModelShape(_label(m), tuple(m.input_shape), m.num_classes) for m in [*sources, *candidates]]
    try:
        if sources:
            check_compatible(shapes, dataset.name, tuple(dataset.input_shape), dataset.num_classes)
    except AdvauditError as error:
        raise ValueError(f"the audit's transfer sources: {error}") from None
    return sources


def create_transfer(
    session: Session,
    run: AuditRun,
    sources: list[ModelRecord],
    candidates: list[ModelRecord],
    config: EvaluationConfig,
) -> TransferJob:
    """The run's queued transfer job (sources × candidates), linked to the run; the caller commits."""
    transfer = transfer_config(config)
    job = repo.transfers.create(
        session=session,
        dataset_id=run.audit.dataset_id,
        source_ids=[m.id for m in sources],
        target_ids=[m.id for m in candidates],
        config=transfer.to_dict(),
        queue=queue_for(transfer.device),
    )
    repo.audit_transfers.create(session=session, run_id=run.id, transfer_job=job)
    return job


def outcome(job: TransferJob, model_id: int) -> TransferOutcome:
    """Transfer job `job` as the verdict sees it for target `model_id`."""
    worst = {
        eps_key(point.eps): point.accuracy
        for point in job.points
        if point.source_model_id is None and point.attack == ALL_ATTACKS and point.target_model_id == model_id
    }
    return TransferOutcome(
        transfer_id=job.id,
        status=job.status,
        source_ids=tuple(job.model_ids("source")),
        error=job.error,
        worst_case=worst,
    )


def with_transfers(session: Session, run: AuditRun, pairs: list[Pair]) -> list[Pair]:
    """Each pair with its candidate's transfer outcome from this run, and its baseline's from the baseline's
    run; unchanged for a run that launched no transfer job."""
    mine = repo.audit_transfers.get(session=session, run_id=run.id)
    if mine is None:
        return pairs
    baseline_runs = {b.run_id for _, b in pairs if b is not None and b.run_id is not None}
    theirs = repo.audit_transfers.list(session=session, run_ids=baseline_runs)
    result = []
    for candidate, baseline in pairs:
        candidate = replace(candidate, transfer=outcome(mine, candidate.model_id))
        old = theirs.get(baseline.run_id) if baseline is not None and baseline.run_id is not None else None
        if baseline is not None and old is not None:
            baseline = replace(baseline, transfer=outcome(old, baseline.model_id))
        result.append((candidate, baseline))
    return result
