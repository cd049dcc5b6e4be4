"""Webhook delivery of a finished audit run: one POST per attempt, each attempt recorded on the run.

The attempt count lives in the database, not in the task message, so a redelivered message neither resets
it nor delivers twice. Delivery never touches the verdict: a dead webhook only ends as `failed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from db import repositories as repo
from db.base import utcnow
from db.models import AuditRun
from db.session import session_scope
from services.audit_states import WEBHOOK_DELIVERED, WEBHOOK_FAILED, WEBHOOK_PENDING

USER_AGENT = "advaudit-webhook/1"
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class WebhookSettings:
    max_attempts: int = 5
    backoff_s: float = 10.0  # wait before attempt n + 1 = backoff_s · 2^(n − 1)
    timeout_s: float = 10.0
    public_url: str | None = None  # base URL of the API for links; paths only when None


def _iso(value) -> str | None:
    return None if value is None else value.isoformat()


def payload(run: AuditRun, public_url: str | None) -> dict[str, Any]:
    """The JSON summary POSTed to the audit's webhook."""
    base = (public_url or "").rstrip("/")
    audit = run.audit
    comparisons = (run.result or {}).get("comparisons", [])
    regressions = [{"model_name": entry["candidate"]["model_name"],
                    "model_version": entry["candidate"]["model_version"],
                    "candidate_job_id": entry["candidate"]["job_id"],
                    "baseline_job_id": (entry.get("baseline") or {}).get("job_id"), **row}
                   for entry in comparisons for row in entry.get("rows", []) if row.get("regressed")]
    return {
        "event": "audit.run.finished",
        "audit": {"id": audit.id, "name": audit.name, "url": f"{base}/api/v1/audits/{audit.id}"},
        "run": {"id": run.id, "slot": run.slot, "trigger": run.trigger, "verdict": run.verdict,
                "reason": run.reason, "scheduled_for": _iso(run.scheduled_for), "started_at": _iso(run.started_at),
                "finished_at": _iso(run.finished_at), "url": f"{base}/api/v1/audits/{audit.id}/runs/{run.id}"},
        "regressions": regressions,
        "comparisons": comparisons,
        "errors": (run.result or {}).get("errors", []),
    }


@dataclass(frozen=True)
class Attempt:
    """The outcome of one delivery attempt; `retry_in_s` is set when another attempt should follow."""

    status: str | None  # delivered, failed, pending (will retry), or None when there was nothing to send
    attempts: int = 0
    error: str | None = None
    retry_in_s: float | None = None


def _post(url: str, body: dict[str, Any], timeout_s: float) -> str | None:
    """POST `body`; None on a 2xx answer, else what went wrong in one line."""
    try:
        response = httpx.post(url, json=body, timeout=timeout_s, follow_redirects=False,
                              headers={"User-Agent": USER_AGENT})
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
    if response.is_success:
        return None
    return f"HTTP {response.status_code}: {response.text.strip()[:200]}"[:MAX_ERROR_CHARS]


def attempt_delivery(run_id: int, sessions: sessionmaker[Session], settings: WebhookSettings) -> Attempt:
    """Make the next delivery attempt of run `run_id` and record it; idempotent once delivered or failed."""
    with session_scope(sessions) as session:
        run = repo.audits.get_run(session=session, run_id=run_id)
        if run is None or run.webhook_status != WEBHOOK_PENDING or not run.audit.webhook_url:
            return Attempt(None)
        url, body, attempts = run.audit.webhook_url, payload(run, settings.public_url), run.webhook_attempts + 1
    # The POST runs outside any transaction: a slow receiver must not hold database locks.
    error = _post(url, body, settings.timeout_s)
    if error is None:
        status, retry_in = WEBHOOK_DELIVERED, None
    elif attempts >= settings.max_attempts:
        status, retry_in = WEBHOOK_FAILED, None
    else:
        status, retry_in = WEBHOOK_PENDING, settings.backoff_s * 2 ** (attempts - 1)
    with session_scope(sessions) as session:
        run = repo.audits.get_run(session=session, run_id=run_id)
        if run is None:
            return Attempt(None)
        repo.audits.update_run(session=session, run=run, webhook_status=status, webhook_attempts=attempts,
                               webhook_error=error, webhook_at=utcnow())
    return Attempt(status, attempts, error, retry_in)
