"""Jobs for worker tests: submitted straight to the database, as the API would, and read back."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from db import repositories as repo
from db.models import Artifact, CamAuditRecord, SweepPoint
from db.session import session_scope

CONFIG = {"limit": 48, "eps": [0, 2 / 255, 8 / 255], "cam_samples": 4, "targeted": "next"}


def submit(sessions, model_id: int, dataset_id: int, config: dict = CONFIG) -> int:
    """Create a queued job (CONFIG unless told) and return its id."""
    with session_scope(sessions) as session:
        return repo.jobs.create(session=session, model_id=model_id, dataset_id=dataset_id, config=config).id


def load_job(sessions, job_id: int):
    """The job row as it is now."""
    with session_scope(sessions) as session:
        return repo.jobs.get(session=session, job_id=job_id)


def row_counts(sessions, job_id: int) -> dict[str, int]:
    """How many result rows of each kind the job has (a duplicate set would double them)."""
    with session_scope(sessions) as session:
        return {
            table.__tablename__: session.scalar(
                select(func.count()).select_from(table).where(table.job_id == job_id)
            )
            for table in (SweepPoint, CamAuditRecord, Artifact)
        }


def stored_report(store, sessions, job_id: int) -> dict:
    with session_scope(sessions) as session:
        artifact = repo.results.get_artifact(session=session, job_id=job_id, name="report.json")
    return json.loads(store.path(artifact.storage_key).read_text())
