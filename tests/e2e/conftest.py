"""End-to-end fixtures: real PostgreSQL, Redis and Celery worker processes for the reliability tests.

The `advaudit serve` tests (test_serve*.py) and the compose check (test_deploy.py) need none of these: each
serve test module starts its own server with tests/support/serve_process.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import require_postgres
from tests.support.service_harness import (
    REDIS_URL,
    ServiceEnv,
    claim_redis_db,
    create_database,
    drop_database,
    open_env,
    release_redis_db,
    require_redis,
)


@pytest.fixture(scope="session")
def redis_db() -> Iterator[int]:
    """A Redis database index this session claimed empty (and flushes at the end)."""
    require_redis()
    index, token = claim_redis_db()
    yield index
    release_redis_db(index, token)


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    """The URL of a fresh, migrated PostgreSQL database for one test module (dropped afterwards)."""
    require_postgres()
    name, url = create_database()
    yield url
    drop_database(name)


@pytest.fixture(scope="module")
def service(postgres_database, redis_db, tmp_path_factory) -> Iterator[ServiceEnv]:
    """Database, shared Redis (this session's index), a queue of this module's own; workers killed after."""
    env = open_env(postgres_database, f"{REDIS_URL}/{redis_db}", tmp_path_factory)
    yield env
    env.close()
