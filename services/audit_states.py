"""Audit run lifecycle, verdicts, triggers and webhook states (pure value sets shared by db, worker, API, CLI)."""

from __future__ import annotations

from enum import StrEnum

from services.errors import AdvauditError


class RunStatus(StrEnum):
    """pending (recorded, no jobs yet) → running (jobs created) → finished (verdict written once)."""

    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"


class RunVerdict(StrEnum):
    PASSED = "passed"  # within every threshold
    REGRESSED = "regressed"  # at least one metric beyond its threshold
    # the run could not be judged (a job failed, a model vanished, the pinned baseline is unusable)
    ERROR = "error"
    BASELINE = "baseline"  # nothing earlier to compare with: this run becomes the reference for the next ones
    # a candidate's evaluation failed a sanity check (services.sanity): its numbers cannot be trusted, so the
    # run does not pass and never becomes a baseline, whatever its metrics
    SUSPICIOUS = "suspicious"


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    NEW_VERSION = "new_version"


class WebhookStatus(StrEnum):
    """Delivery of a finished run's summary; never part of the verdict."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


PENDING, RUNNING, FINISHED = RunStatus
PASSED, REGRESSED, ERROR, BASELINE, SUSPICIOUS = RunVerdict
SCHEDULE, MANUAL, NEW_VERSION = Trigger
WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED = WebhookStatus
RUN_STATUSES, VERDICTS, TRIGGERS, WEBHOOK_STATUSES = (
    tuple(RunStatus),
    tuple(RunVerdict),
    tuple(Trigger),
    tuple(WebhookStatus),
)
# A run with one of these verdicts can serve as the "previous run" baseline of a later run (never `suspicious`).
REFERENCE_VERDICTS = frozenset({PASSED, BASELINE})

# A run is launched once and finished once; an undone "run now" (broker down) is deleted while still pending.
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    PENDING: frozenset({RUNNING, FINISHED}),  # → finished: nothing to launch (an `error` verdict at once)
    RUNNING: frozenset({FINISHED}),
    FINISHED: frozenset(),
}


class InvalidRunTransition(AdvauditError):
    """An audit run was asked to move between two statuses that RUN_TRANSITIONS does not connect."""


def check_run_transition(old: str, new: str) -> None:
    """Raise InvalidRunTransition unless `old` → `new` is in RUN_TRANSITIONS."""
    for status in (old, new):
        if status not in RUN_TRANSITIONS:
            raise InvalidRunTransition(
                f"unknown audit run status {status!r}; expected one of {', '.join(RUN_STATUSES)}"
            )
    if new not in RUN_TRANSITIONS[RunStatus(old)]:
        raise InvalidRunTransition(f"an audit run that is {old} cannot become {new}")
