"""Engine and session factory for PostgreSQL or SQLite, and the one place that commits: session_scope."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """An engine tuned for the backend: SQLite gets WAL, busy timeout, foreign keys; PostgreSQL pre-ping."""
    url = make_url(url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, echo=echo, pool_pre_ping=True)
    database = url.database
    in_memory = database in (None, "", ":memory:")
    if database is not None and not in_memory:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # One shared connection for an in-memory database, else each thread (e.g. a test client's) sees its own.
    pool = {"poolclass": StaticPool} if in_memory else {}
    engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False}, **pool)

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                # WAL lets API readers proceed while a worker writes; persistent, but cheap to re-assert.
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit, so a handler can still read what it just wrote."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit if the block succeeds, roll back if it raises, always close."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
