"""Repositories with a fixed verb set (get, list, create, update, delete); they flush, never commit.

Usage: `from db.repositories import jobs; jobs.create(session=s, ...)`.
"""

from db.repositories import (
    audit_transfers,
    audits,
    datasets,
    jobs,
    models,
    results,
    shards,
    tokens,
    transfers,
)

__all__ = [
    "audit_transfers",
    "audits",
    "datasets",
    "jobs",
    "models",
    "results",
    "shards",
    "tokens",
    "transfers",
]
