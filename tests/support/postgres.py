"""The test PostgreSQL server: its URL, a skip (locally) or failure (CI) when it is unreachable, fresh schemas.

PostgreSQL is expected at ADVAUDIT_TEST_POSTGRES_URL (default postgres@127.0.0.1:5432/test, as
scripts/ensure_services.sh provides).
"""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.support.env import in_ci

POSTGRES_URL = os.environ.get(
    "ADVAUDIT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

_postgres_error: list[str | None] = []


def _postgres_unreachable() -> str | None:
    """None when PostgreSQL answers, else why not (checked once per session)."""
    if not _postgres_error:
        try:
            engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            engine.dispose()
            _postgres_error.append(None)
        except Exception as error:  # any failure to connect means the same thing here
            _postgres_error.append(f"{type(error).__name__}: {error}".splitlines()[0])
    return _postgres_error[0]


def require_postgres() -> None:
    """Skip (locally) or fail (CI) the calling test when PostgreSQL is unreachable."""
    reason = _postgres_unreachable()
    if reason is None:
        return
    message = f"PostgreSQL at {POSTGRES_URL} is unreachable ({reason})"
    if in_ci():
        pytest.fail(
            f"{message}; CI is set, so this is a failure: run scripts/ensure_services.sh", pytrace=False
        )
    pytest.skip(f"{message}; run scripts/ensure_services.sh")


def fresh_postgres_schema() -> tuple[str, str]:
    """(schema name, URL whose search_path is that schema): isolates tests from each other and others."""
    schema = f"advaudit_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    return schema, url.render_as_string(hide_password=False)


def drop_postgres_schema(schema: str) -> None:
    """Drop a schema `fresh_postgres_schema` made, with everything in it."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()
