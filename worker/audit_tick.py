"""The audit tick: finalize runs whose jobs all ended, record due scheduled runs, launch pending runs, and
send again the messages that were lost (see worker.audit_recovery).

Beat sends it every `audit_tick_s`; it reads every audit from the database each time, so a created, changed
or disabled audit takes effect at the next tick without restarting anything. The clock is a parameter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime

from db import repositories as repo
from db.models import Audit
from db.repositories._common import MAX_LIMIT
from db.session import session_scope
from services.audit_schedule import Schedule, slot_key
from services.audit_states import PENDING, RUNNING, SCHEDULE
from services.errors import ConfigError
from worker.audit_recovery import resend_idle_webhooks, resend_unsent_jobs
from worker.audit_runs import AuditContext, finalize_run, launch_run

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    """What one tick did (run ids), for logs and tests."""

    created: list[int] = field(default_factory=list)
    launched: list[int] = field(default_factory=list)
    finalized: list[int] = field(default_factory=list)
    resent_jobs: list[int] = field(default_factory=list)
    resent_webhooks: list[int] = field(default_factory=list)


def due_slot(audit: Audit, now: datetime, *, min_interval_s: int = 1) -> datetime | None:
    """The slot `audit` should run for at `now`: its latest slot, unless that predates its schedule."""
    if not audit.enabled:
        return None
    schedule = Schedule.build(
        cron=audit.cron, interval_s=audit.interval_s, timezone=audit.timezone, min_interval_s=min_interval_s
    )
    if schedule is None:
        return None
    slot = schedule.latest_slot(now)
    # Only the latest slot is considered, so a scheduler that was down runs once, not a burst of missed slots;
    # a slot before the schedule was created, changed or re-enabled never runs.
    if slot is None or slot < audit.schedule_from:
        return None
    return slot


def _ids(session, statement_fn) -> list[int]:
    """Every id a paginated repository call returns (pages of MAX_LIMIT)."""
    ids, offset = [], 0
    while True:
        page = statement_fn(session, offset)
        ids += [row.id for row in page]
        if len(page) < MAX_LIMIT:
            return ids
        offset += MAX_LIMIT


def record_due_runs(context: AuditContext, now: datetime) -> list[int]:
    """Insert a pending run for every enabled audit whose latest slot has no run yet."""
    with session_scope(context.sessions) as session:
        audit_ids = _ids(
            session,
            lambda s, offset: repo.audits.list(session=s, enabled=True, limit=MAX_LIMIT, offset=offset),
        )
    created = []
    for audit_id in audit_ids:
        try:
            with session_scope(context.sessions) as session:
                audit = repo.audits.get(session=session, audit_id=audit_id)
                slot = None if audit is None else due_slot(audit, now)
                if slot is None:
                    continue
                key = slot_key(slot)
                if repo.audits.get_run_by_slot(session=session, audit_id=audit_id, slot=key) is not None:
                    continue
                # One run at a time per schedule: a slot falling due while a run is unfinished waits, and
                # fires (once, as the latest slot) when that run is done.
                if repo.audits.count_runs(session=session, audit_id=audit_id, status=(PENDING, RUNNING)):
                    continue
                run = repo.audits.create_run(
                    session=session, audit=audit, slot=key, trigger=SCHEDULE, scheduled_for=slot
                )
                if run is not None:
                    created.append(run.id)
        except ConfigError as error:  # a stored schedule this version no longer accepts: say so, go on
            log.error("audit %s: schedule ignored: %s", audit_id, error)
    return created


def _each(run_ids: list[int], step, context: AuditContext, done: list[int]) -> None:
    """Apply launch/finalize to each run, oldest first; one run's failure does not stop the others."""
    for run_id in reversed(run_ids):
        try:
            if step(run_id, context) is not None:
                done.append(run_id)
        except Exception:  # e.g. a database hiccup: the next tick tries again
            log.exception("audit run %s: %s failed", run_id, step.__name__)


def _run_ids(context: AuditContext, status: str) -> list[int]:
    with session_scope(context.sessions) as session:
        return _ids(
            session,
            lambda s, offset: repo.audits.list_runs(session=s, status=status, limit=MAX_LIMIT, offset=offset),
        )


def tick(context: AuditContext, now: datetime | None = None) -> TickReport:
    """One scheduler pass at `now` (default: the context's clock); safe to run twice or concurrently."""
    if now is not None:
        context = replace(context, clock=lambda: now)
    now = context.clock()
    report = TickReport()
    # Finalize first: a slot that waited for an unfinished run then fires in this very tick. This also catches
    # runs whose last job ended without the evaluate task reporting it (e.g. cancelled while queued through
    # the API), and runs past their timeout.
    _each(_run_ids(context, RUNNING), finalize_run, context, report.finalized)
    report.created = record_due_runs(context, now)
    _each(_run_ids(context, PENDING), launch_run, context, report.launched)
    report.resent_jobs = resend_unsent_jobs(context)
    report.resent_webhooks = resend_idle_webhooks(context)
    return report
