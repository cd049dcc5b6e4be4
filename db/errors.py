"""Persistence errors worth a clear message (the API maps them with the domain errors)."""

from services.errors import AdvauditError


class RecordInUse(AdvauditError):
    """A row cannot be deleted because other rows still refer to it (e.g. a model used by jobs)."""


class StaleJob(AdvauditError):
    """A job changed under the caller (another worker re-claimed it, or it was cancelled)."""
