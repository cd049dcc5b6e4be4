"""Helpers shared by the repositories: column-checked updates and id-descending pagination."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Any, TypeVar

from sqlalchemy import Select, func, inspect, select
from sqlalchemy.orm import Session

from db.base import Base

T = TypeVar("T", bound=Base)

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


def column_names(model: type[Base]) -> frozenset[str]:
    return frozenset(attr.key for attr in inspect(model).column_attrs)


def set_fields(record: Base, fields: dict[str, Any], *, protected: Iterable[str] = ("id",)) -> None:
    """Assign `fields` to `record`, refusing names that are not columns or are protected."""
    allowed = column_names(type(record)) - set(protected)
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(f"{type(record).__name__} has no updatable field(s) {', '.join(unknown)}")
    for key, value in fields.items():
        setattr(record, key, value)


def paginate(
    session: Session, statement: Select, model: type[T], *, limit: int, offset: int
) -> builtins.list[T]:
    """Newest first (id descending), `limit` clamped to [1, MAX_LIMIT], `offset` to ≥ 0."""
    limit = min(max(int(limit), 1), MAX_LIMIT)
    offset = max(int(offset), 0)
    statement = statement.order_by(model.id.desc()).limit(limit).offset(offset)
    return builtins.list(session.scalars(statement))


def count(session: Session, statement: Select) -> int:
    """Rows `statement` would return, ignoring pagination."""
    return session.scalar(select(func.count()).select_from(statement.order_by(None).subquery())) or 0
