"""Audit run lifecycle, verdicts and triggers (pure value sets shared by the database, worker and API)."""

from __future__ import annotations

# Lifecycle: pending (recorded, no jobs yet) → running (jobs created) → finished (verdict written once).
PENDING = "pending"
RUNNING = "running"
FINISHED = "finished"
RUN_STATUSES = (PENDING, RUNNING, FINISHED)

# passed: within every threshold; regressed: at least one metric beyond its threshold;
# error: the run could not be judged (a job failed, a model vanished, the pinned baseline is unusable);
# baseline: nothing earlier to compare with, so this run becomes the reference for the next ones.
PASSED = "passed"
REGRESSED = "regressed"
ERROR = "error"
BASELINE = "baseline"
VERDICTS = (PASSED, REGRESSED, ERROR, BASELINE)
# A run with one of these verdicts can serve as the "previous run" baseline of a later run.
REFERENCE_VERDICTS = (PASSED, BASELINE)

SCHEDULE = "schedule"
MANUAL = "manual"
NEW_VERSION = "new_version"
TRIGGERS = (SCHEDULE, MANUAL, NEW_VERSION)

# Webhook delivery of a finished run's summary; never part of the verdict.
WEBHOOK_PENDING = "pending"
WEBHOOK_DELIVERED = "delivered"
WEBHOOK_FAILED = "failed"
WEBHOOK_STATUSES = (WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED)
