"""Database fixtures: every test runs on SQLite (a temp file) and PostgreSQL (a fresh schema of its own).

PostgreSQL is expected at ADVAUDIT_TEST_POSTGRES_URL (default postgres@127.0.0.1:5432/test, as
scripts/ensure_services.sh provides). Unreachable, its tests are skipped locally and fail in CI.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.models import Base
from db.session import make_engine, make_session_factory
from tests.support.postgres import drop_postgres_schema, fresh_postgres_schema, require_postgres

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> Iterator[str]:
    """An empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'advaudit.db'}"
        return
    require_postgres()
    schema, url = fresh_postgres_schema()
    try:
        yield url
    finally:
        drop_postgres_schema(schema)


@pytest.fixture
def engine(db_url) -> Iterator[Engine]:
    """An engine on a database holding every table."""
    engine = make_engine(db_url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(factory) -> Iterator[Session]:
    session = factory()
    yield session
    session.rollback()
    session.close()
