"""Job status values and the one table of allowed transitions between them (pure: no database here)."""

from __future__ import annotations

from services.errors import AdvauditError

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
ACTIVE = frozenset({QUEUED, RUNNING})

# A finished job never goes back to the queue: a rerun is a new job, so each job's results stay as reported.
TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING, CANCELLED, FAILED}),  # → failed: it could not be enqueued
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLED, QUEUED}),  # → queued: worker lost, task redelivered
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


class InvalidTransition(AdvauditError):
    """A job was asked to move between two statuses that the transition table does not connect."""


def check_transition(old: str, new: str) -> None:
    """Raise InvalidTransition unless `old` → `new` is in the transition table."""
    for status in (old, new):
        if status not in TRANSITIONS:
            raise InvalidTransition(f"unknown job status {status!r}; expected one of {', '.join(STATUSES)}")
    if new not in TRANSITIONS[old]:
        if old in TERMINAL:
            raise InvalidTransition(
                f"job is already {old} and cannot become {new}; rerun it to start a new job")
        allowed = ", ".join(sorted(TRANSITIONS[old]))
        raise InvalidTransition(f"a {old} job cannot become {new}; from {old} it can only become {allowed}")


def can_transition(old: str, new: str) -> bool:
    """True when `old` → `new` is an allowed transition."""
    return new in TRANSITIONS.get(old, ())
