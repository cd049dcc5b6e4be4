"""Repositories with a fixed verb set (get, list, create, update, delete); they flush, never commit.

Usage: `from db.repositories import jobs; jobs.create(session=s, ...)`.
"""

from db.repositories import datasets, jobs, models, results, tokens

__all__ = ["datasets", "jobs", "models", "results", "tokens"]
