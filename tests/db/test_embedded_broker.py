"""The embedded SQLite broker: prepared in WAL mode with its tables, and a send waits out a busy writer."""

from __future__ import annotations

import sqlite3
import threading
import time
from types import SimpleNamespace

from api.broker import CeleryBroker
from contracts import embedded_broker

QUEUES = ("evaluations", "gpu")
HOLD_S = 11.0  # longer than two of SQLite's default 5 s lock waits (the API's send tries more than once)


def _broker_url(tmp_path) -> str:
    return f"sqla+sqlite:///{tmp_path / 'broker.db'}"


def test_prepare_makes_the_tables_in_wal_mode(tmp_path):
    embedded_broker.prepare(_broker_url(tmp_path), QUEUES)
    embedded_broker.prepare(_broker_url(tmp_path), QUEUES)  # idempotent: every `advaudit serve` start runs it
    with sqlite3.connect(tmp_path / "broker.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        names = {row[0] for row in connection.execute("SELECT name FROM kombu_queue")}
    assert {"kombu_queue", "kombu_message"} <= tables
    assert names == set(QUEUES)


def test_a_send_waits_for_another_writer_instead_of_failing(tmp_path):
    url = _broker_url(tmp_path)
    embedded_broker.prepare(url, QUEUES)
    broker = CeleryBroker(url)
    locked, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:  # what a worker's or beat's write looks like to the API
        connection = sqlite3.connect(tmp_path / "broker.db", isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(HOLD_S)
        connection.execute("COMMIT")
        connection.close()

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    locked.wait(5)
    started = time.monotonic()
    threading.Timer(HOLD_S, release.set).start()
    broker.send(SimpleNamespace(id=1, queue="evaluations"))  # the API's send, with its short retry policy
    waited = time.monotonic() - started
    holder.join()
    assert waited >= HOLD_S - 0.5  # it did wait for the lock …
    with sqlite3.connect(tmp_path / "broker.db") as connection:  # … and the message is there
        assert connection.execute("SELECT COUNT(*) FROM kombu_message").fetchone()[0] == 1
