"""Processes that start together (API replicas, `advaudit db upgrade`) migrate a PostgreSQL database once."""

from __future__ import annotations

import threading

import pytest

from db import migrate
from tests.support.postgres import drop_postgres_schema, fresh_postgres_schema, require_postgres

RACERS = 4


@pytest.mark.timeout(120)  # without the lock the racers deadlock on DDL locks: fail, do not hang
def test_concurrent_upgrades_all_succeed_and_migrate_once():
    require_postgres()
    schema, url = fresh_postgres_schema()
    start, errors = threading.Barrier(RACERS), []

    def upgrade() -> None:
        start.wait()
        try:
            migrate.upgrade(url)
        except Exception as error:  # what an unlocked race raises: duplicate table or version row
            errors.append(error)

    try:
        threads = [threading.Thread(target=upgrade) for _ in range(RACERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert migrate.current(url) == migrate.head()
    finally:
        drop_postgres_schema(schema)
