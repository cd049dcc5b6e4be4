"""Which job each candidate job of an audit run is judged against: the pinned job, or an earlier comparable run's.

"Comparable" means made on the same dataset with the same evaluation config: after a change of either, the
earlier numbers measure something else, so the first run after the change becomes the new baseline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from sqlalchemy.orm import Session

from db import repositories as repo
from db.models import Audit, AuditRun, Job
from db.repositories._common import MAX_LIMIT
from services.audit_verdict import NO_BASELINE, JobResult
from services.errors import AdvauditError
from services.specs import EvaluationConfig

# Options that change which files are written, not what is measured.
OUTPUT_ONLY_OPTIONS = ("triptychs", "save_adversarial")
CHANGED = (
    "the dataset or the evaluation config changed since the last passing run: this run is the new baseline"
)

Pair = tuple[JobResult, JobResult | None]


def _result(job: Job, run_id: int | None) -> JobResult:
    return JobResult(
        job_id=job.id,
        model_id=job.model_id,
        model_name=job.model.name,
        model_version=job.model.version,
        status=job.status,
        error=job.error,
        report=job.report,
        run_id=run_id,
    )


def measurement(job: Job) -> tuple[int, str] | None:
    """What a job measured: its dataset and its normalised config (None if the config no longer validates)."""
    try:
        config = EvaluationConfig(**job.config).to_dict()
    except (AdvauditError, TypeError, ValueError):
        return None
    for name in OUTPUT_ONLY_OPTIONS:
        config.pop(name, None)
    return job.dataset_id, json.dumps(config, sort_keys=True)


def _same_model(audit: Audit, old: Job, job: Job) -> bool:
    # Fixed model ids are compared model by model; a model name is compared with its earlier versions.
    return old.model_id == job.model_id if audit.model_ids is not None else old.model.name == job.model.name


def _earlier_jobs(session: Session, audit: Audit, run: AuditRun) -> Iterator[tuple[int, Job]]:
    """(run id, job) of the earlier runs that passed or were a baseline, newest run first."""
    offset = 0
    while True:
        page = repo.audits.list_reference_jobs(
            session=session, audit_id=audit.id, before_run_id=run.id, limit=MAX_LIMIT, offset=offset
        )
        yield from page
        if len(page) < MAX_LIMIT:
            return
        offset += MAX_LIMIT


def _previous_run_pairs(
    session: Session, audit: Audit, run: AuditRun, candidates: list[Job]
) -> tuple[list[Pair], str]:
    """Each candidate with the newest earlier passing job of its model that measured the same thing."""
    matches: dict[int, tuple[int, Job]] = {}
    wanted = {job.id: measurement(job) for job in candidates}
    changed = False  # an earlier passing job of the same model measured something else
    for run_id, old in _earlier_jobs(session, audit, run):
        same_model = [job for job in candidates if job.id not in matches and _same_model(audit, old, job)]
        measured = measurement(old) if same_model else None
        for job in same_model:
            if wanted[job.id] is not None and measured == wanted[job.id]:
                matches[job.id] = (run_id, old)
            else:
                changed = True
        if len(matches) == len(candidates):
            break
    pairs = [
        (_result(job, run.id), _result(matches[job.id][1], matches[job.id][0]) if job.id in matches else None)
        for job in candidates
    ]
    return pairs, CHANGED if changed and not matches else NO_BASELINE


def baseline_pairs(
    session: Session, audit: Audit, run: AuditRun, candidates: list[Job], errors: list[str]
) -> tuple[list[Pair], str]:
    """Each candidate job with the job it is judged against (None: nothing comparable before it), and the
    reason to give when no candidate has one."""
    if audit.baseline_job_id is None:
        return _previous_run_pairs(session, audit, run, candidates)
    pinned = repo.jobs.get(session=session, job_id=audit.baseline_job_id)
    if pinned is None:
        errors.append(f"the pinned baseline job {audit.baseline_job_id} no longer exists")
        return [(_result(job, run.id), None) for job in candidates], NO_BASELINE
    owner = repo.audits.get_run_for_job(session=session, job_id=pinned.id)
    baseline = _result(pinned, owner.id if owner else None)
    return [(_result(job, run.id), baseline) for job in candidates], NO_BASELINE
