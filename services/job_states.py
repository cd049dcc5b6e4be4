"""Job statuses and the one table of allowed transitions between them (pure: no database here)."""

from __future__ import annotations

from enum import StrEnum

from services.errors import AdvauditError


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = JobStatus  # short names for the members, in their order
STATUSES = tuple(JobStatus)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
ACTIVE = frozenset({QUEUED, RUNNING})

# A finished job never goes back to the queue: a rerun is a new job, so each job's results stay as reported.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    QUEUED: frozenset(
        {RUNNING, CANCELLED, FAILED}
    ),  # → failed: it could not be enqueued, or ran out of attempts
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
    if new not in TRANSITIONS[JobStatus(old)]:
        if old in TERMINAL:
            raise InvalidTransition(
                f"job is already {old} and cannot become {new}; rerun it to start a new job"
            )
        allowed = ", ".join(sorted(TRANSITIONS[JobStatus(old)]))
        raise InvalidTransition(f"a {old} job cannot become {new}; from {old} it can only become {allowed}")


def can_transition(old: str, new: str) -> bool:
    """True when `old` → `new` is an allowed transition."""
    return old in TRANSITIONS and new in TRANSITIONS[JobStatus(old)]
