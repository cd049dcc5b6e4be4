"""Health: the database answers SELECT 1, the broker accepts a connection, workers answer a ping."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from api.broker import Broker


def _database(sessions: sessionmaker[Session]) -> dict[str, Any]:
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
        return {"ok": True, "error": None}
    except Exception as error:  # any failure means the same here: the database does not answer
        lines = str(error).strip().splitlines()
        return {"ok": False, "error": f"{type(error).__name__}: {lines[0] if lines else ''}"}


def check(
    *, sessions: sessionmaker[Session], broker: Broker, auth_required: bool
) -> tuple[dict[str, Any], bool]:
    """(document, database ok); status ok, degraded (no broker or no workers) or down (no database)."""
    database = _database(sessions)
    queue = broker.status()
    if not database["ok"]:
        status = "down"
    elif not queue["broker"]["ok"] or queue["workers"].get("count") == 0:
        status = "degraded"  # an unknown worker count (a broker without pings) is not evidence of none
    else:
        status = "ok"
    return {"status": status, "database": database, **queue, "auth_required": auth_required}, database["ok"]
