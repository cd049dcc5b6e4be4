"""API use cases: upload handling, job submission, comparison, health (no HTTP routing here)."""

from collections.abc import Sequence
from typing import Any


def page(rows: Sequence[Any], count: int, limit: int, offset: int) -> dict[str, Any]:
    """The list envelope of every collection endpoint (see api.schemas.Page)."""
    return {"data": list(rows), "count": count, "limit": limit, "offset": offset}


def is_decimal(text: str) -> bool:
    """Plain ASCII digits only: str.isdigit() also accepts "²", which int() then rejects."""
    return text.isascii() and text.isdigit()
