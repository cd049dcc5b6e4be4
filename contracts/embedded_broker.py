"""The embedded broker: an SQLite file that kombu's SQLAlchemy transport uses as its queue.

The API, the worker and the beat it embeds all write to that file. SQLite's default lock wait (5 s) and
rollback journal made a send fail now and then while the worker was starting (its create_all and first
beat tick held the lock); WAL mode, a longer lock wait and tables made before anyone starts remove that.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

LOCK_WAIT_S = 30.0
SCHEME = "sqla+sqlite"


def is_embedded(broker_url: str) -> bool:
    return broker_url.split(":", 1)[0] == SCHEME


def transport_options() -> dict[str, dict[str, float]]:
    """kombu's SQLAlchemy transport passes these to create_engine: wait for a busy database, do not fail."""
    return {"connect_args": {"timeout": LOCK_WAIT_S}}


def prepare(broker_url: str, queues: tuple[str, ...]) -> None:
    """Make the broker's file in WAL mode (persistent in the file) with its tables and `queues`, up front."""
    from kombu.connection import Connection  # noqa: PLC0415 (only the embedded set-up needs it)

    database = make_url(broker_url.removeprefix("sqla+")).database
    if not database or database == ":memory:":
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(database, timeout=LOCK_WAIT_S)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()
    # kombu ships py.typed, but Connection.__init__ is unannotated.
    with Connection(broker_url, transport_options=transport_options()) as broker:  # type: ignore[no-untyped-call]
        for queue in queues:  # the first declaration creates kombu's tables too
            broker.default_channel.queue_declare(queue)
