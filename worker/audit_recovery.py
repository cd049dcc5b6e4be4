"""The tick's recovery of lost messages: evaluate messages of a launched run, and webhook deliveries.

Both are sent after a commit, so a worker that dies in between (or a broker that drops a message) leaves a
committed state that nothing would ever act on. A re-sent message is harmless when the first one arrives
after all: a job is claimed with a compare-and-set, and so is each webhook attempt.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from db import repositories as repo
from db.session import session_scope
from services.job_states import QUEUED
from worker.audit_runs import AuditContext, mark_jobs_sent

log = logging.getLogger(__name__)


def resend_unsent_jobs(context: AuditContext) -> list[int]:
    """Send again the queued jobs of running runs whose launch never confirmed its sends; the run ids."""
    cutoff = context.clock() - timedelta(seconds=context.lost_after_s)
    with session_scope(context.sessions) as session:
        runs = repo.audits.list_runs_with_unsent_jobs(session=session, started_before=cutoff)
        plan = [
            (
                run.id,
                [
                    job
                    for _, job in repo.audits.list_run_jobs(session=session, run_ids=[run.id])
                    if job.status == QUEUED
                ],
            )
            for run in runs
        ]
        transfers = {run_id: repo.audit_transfers.get(session=session, run_id=run_id) for run_id, _ in plan}
    resent = []
    for run_id, jobs in plan:
        transfer = transfers[run_id]
        try:
            for job in jobs:
                context.send_job(job)
            if transfer is not None and transfer.status == QUEUED:  # its transfer job too (transfer sources)
                context.send_transfer(transfer)
            mark_jobs_sent(run_id, context)
        except Exception:  # broker or database unavailable: the next tick tries again
            log.exception("audit run %s: could not send its queued jobs again", run_id)
            continue
        log.warning(
            "audit run %s: its launch never confirmed sending its jobs; sent %d queued job(s) again",
            run_id,
            len(jobs),
        )
        resent.append(run_id)
    return resent


def resend_idle_webhooks(context: AuditContext) -> list[int]:
    """Send again the deliveries whose next attempt is overdue by `lost_after_s`; the run ids."""
    now = context.clock()
    grace = timedelta(seconds=context.lost_after_s)
    with session_scope(context.sessions) as session:
        runs = repo.audits.list_idle_webhooks(session=session, idle_before=now - grace)
        overdue = [run.id for run in runs if context.webhook.next_attempt_at(run) + grace <= now]
    resent = []
    for run_id in overdue:
        try:
            context.send_webhook(run_id)
        except Exception:  # broker unavailable: the next tick tries again
            log.exception("audit run %s: could not send its webhook delivery again", run_id)
            continue
        log.warning("audit run %s: its webhook delivery was overdue; sent it again", run_id)
        resent.append(run_id)
    return resent
