"""Programmatic Alembic (no alembic.ini): upgrade, downgrade and inspect a database's schema revision."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL

from db.session import make_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any fixed 64-bit number: every process migrating a PostgreSQL database takes this advisory lock first.
MIGRATION_LOCK_ID = 0x61647661756469  # "advaudi"


def alembic_config() -> Config:
    """An Alembic config for this package's migrations (what alembic.ini would hold)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def default_url() -> str:
    """Settings' database_url (Settings always fills it in: it follows data_dir when unset)."""
    from contracts.settings import get_settings

    url = get_settings().database_url
    if url is None:  # unreachable after Settings' validation; here for the type checker
        raise RuntimeError("settings.database_url is unset")
    return url


def _with_connection(url: str | URL | None, action: Callable[[Config], None]) -> None:
    engine = make_engine(url if url is not None else default_url())
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # API replicas and workers starting together must not run the same migration twice; the
                # lock is held until this transaction commits, and the next one then finds nothing to do.
                connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            config = alembic_config()
            # env.py runs on this connection, so URLs with passwords or '%' never pass through ini parsing.
            config.attributes["connection"] = connection
            action(config)
    finally:
        engine.dispose()


def upgrade(url: str | URL | None = None, revision: str = "head") -> None:
    """Bring the database at `url` (default: settings' database_url) up to `revision`."""
    _with_connection(url, lambda config: command.upgrade(config, revision))


def downgrade(url: str | URL | None, revision: str) -> None:
    """Step the database back to `revision` ("base" removes every table)."""
    _with_connection(url, lambda config: command.downgrade(config, revision))


def current(url: str | URL | None = None) -> str | None:
    """The revision the database is at, or None for an empty (never migrated) database."""
    engine = make_engine(url if url is not None else default_url())
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str:
    """The newest revision this code ships."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:  # never: the package ships its migrations
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return revision
