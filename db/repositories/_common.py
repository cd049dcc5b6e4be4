"""Helpers shared by the repositories: column-checked updates and id-descending pagination."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Delete, Select, Update, func, inspect, select
from sqlalchemy.orm import QueryableAttribute, Session

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
    session: Session, statement: Select[T], id_column: QueryableAttribute[int], *, limit: int, offset: int
) -> builtins.list[T]:
    """Newest first (`id_column`, the model's id, descending), `limit` clamped to [1, MAX_LIMIT], `offset` to ≥ 0."""
    limit = min(max(int(limit), 1), MAX_LIMIT)
    offset = max(int(offset), 0)
    statement = statement.order_by(id_column.desc()).limit(limit).offset(offset)
    return builtins.list(session.scalars(statement))


def count(session: Session, statement: Select[*tuple[Any, ...]]) -> int:
    """Rows `statement` would return, ignoring pagination."""
    return session.scalar(select(func.count()).select_from(statement.order_by(None).subquery())) or 0


def rows_matched(session: Session, statement: Update | Delete) -> int:
    """Execute an UPDATE or DELETE and return how many rows it matched.

    session.execute is typed as returning a Result, but for DML it is a CursorResult, which has rowcount.
    """
    return cast("CursorResult[Any]", session.execute(statement)).rowcount
