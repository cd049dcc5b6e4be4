"""Jobs' scratch folders under the data directory: one per attempt, removed when it ends or once it is stale.

A process killed by SIGKILL (the OOM killer, a hard time limit, the watchdog) cannot remove its folder; the
next worker start and every requeue sweep do. A folder is stale when its job is no longer running under
the attempt in its name, which the database says whichever host made it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db import repositories as repo
from db.session import session_scope

FOLDER = re.compile(r"^job-(\d+)-(\d+)-")
DEFAULT_ROOT = Path(tempfile.gettempdir()) / "advaudit-scratch"  # in-process use without settings (tests)


@contextmanager
def job_folder(root: Path | None, job_id: int, attempt: int) -> Iterator[Path]:
    """A fresh folder for this attempt of this job, removed afterwards (also when the job raises)."""
    base = root or DEFAULT_ROOT
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"job-{job_id}-{attempt}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def discard_stale(root: Path, sessions: sessionmaker[Session]) -> list[Path]:
    """Remove the folders of attempts that are over (their job is not running under that attempt)."""
    if not root.is_dir():
        return []
    found = [
        (path, int(match[1]), int(match[2]))
        for path in root.iterdir()
        if path.is_dir() and (match := FOLDER.match(path.name))
    ]
    if not found:
        return []
    with session_scope(sessions) as session:
        live = repo.jobs.running_attempts(session=session, job_ids={job_id for _, job_id, _ in found})
    stale = [path for path, job_id, attempt in found if (job_id, attempt) not in live]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale
