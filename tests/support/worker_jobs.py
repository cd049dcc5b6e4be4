"""Jobs for worker tests: submitted straight to the database, as the API would, and read back."""

from __future__ import annotations

from db import repositories as repo
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
