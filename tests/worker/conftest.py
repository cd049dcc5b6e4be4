"""Worker fixtures: an SQLite database in tmp_path, a local artifact store, the demo model and digits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import Base
from db.session import make_engine, make_session_factory, session_scope
from db.storage import LocalArtifactStore
from tests.support.builders import add_demo_model, add_digits
from worker import runner


@pytest.fixture(autouse=True)
def fresh_model_cache(monkeypatch) -> runner.ModelCache:
    """Each test starts with an empty per-process model cache (a cached model remembers its file path)."""
    cache = runner.ModelCache()
    monkeypatch.setattr(runner, "MODELS", cache)
    return cache


@pytest.fixture
def sessions(tmp_path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'advaudit.db'}")
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def store(tmp_path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def context(sessions, store) -> runner.WorkerContext:
    """What a worker process holds; device "auto" as in the default settings."""
    return runner.WorkerContext(sessions=sessions, store=store, progress_interval_s=0.0, lease_s=5.0)


@pytest.fixture
def demo_ids(sessions, store) -> tuple[int, int]:
    """(model id, dataset id) of the shipped gap-cnn demo model and the built-in digits."""
    with session_scope(sessions) as session:
        return add_demo_model(session, store).id, add_digits(session).id
