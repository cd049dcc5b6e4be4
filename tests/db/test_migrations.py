"""The Alembic migrations build exactly the schema of db/models.py, on SQLite and PostgreSQL."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from db import migrate
from db.models import Base
from db.session import make_engine


def _differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_matches_the_models(db_url):
    assert migrate.current(db_url) is None
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head() == "0008"
    assert _differences(db_url) == []
    migrate.upgrade(db_url)  # idempotent
    assert migrate.current(db_url) == "0008"


def test_the_comparison_notices_a_drift(db_url):
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE jobs ADD COLUMN stray INTEGER")
    engine.dispose()
    assert any(diff[0] == "remove_column" and diff[3].name == "stray" for diff in _differences(db_url))


def test_downgrade_to_base_removes_every_table(db_url):
    migrate.upgrade(db_url)
    migrate.downgrade(db_url, "base")
    assert migrate.current(db_url) is None
    engine = make_engine(db_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()


def _verdict_check(url: str) -> str:
    engine = make_engine(url)
    try:
        checks = inspect(engine).get_check_constraints("audit_runs")
    finally:
        engine.dispose()
    return next(check["sqltext"] for check in checks if "baseline" in check["sqltext"])


def test_0005_admits_the_suspicious_verdict_and_its_downgrade_removes_it(db_url):
    migrate.upgrade(db_url)
    assert "suspicious" in _verdict_check(db_url)
    migrate.downgrade(db_url, "0004")
    check = _verdict_check(db_url)
    assert "suspicious" not in check and "baseline" in check


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _columns(url: str, table: str) -> set[str]:
    engine = make_engine(url)
    try:
        return {column["name"] for column in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def test_0007_adds_the_transfer_tables_and_its_downgrade_removes_them(db_url):
    transfer_tables = {"transfer_jobs", "transfer_job_models", "transfer_points"}
    migrate.upgrade(db_url)
    assert transfer_tables <= _tables(db_url)
    migrate.downgrade(db_url, "0006")
    assert migrate.current(db_url) == "0006"
    assert not transfer_tables & _tables(db_url)
    assert "job_shards" in _tables(db_url)
    migrate.upgrade(db_url)
    assert transfer_tables <= _tables(db_url) and _differences(db_url) == []


def test_0008_adds_the_audit_transfer_tables_and_its_downgrade_removes_them(db_url):
    migrate.upgrade(db_url)
    tables = {"audit_run_transfers", "audit_transfer_sources"}
    assert tables <= _tables(db_url)
    assert {"audit_id", "model_id", "position"} <= _columns(db_url, "audit_transfer_sources")
    migrate.downgrade(db_url, "0007")
    assert migrate.current(db_url) == "0007"
    assert not tables & _tables(db_url)
    assert "transfer_jobs" in _tables(db_url)
    migrate.upgrade(db_url)
    assert "audit_run_transfers" in _tables(db_url) and _differences(db_url) == []
