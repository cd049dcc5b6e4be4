"""Webhook delivery of a finished audit run: one POST per attempt, each attempt claimed and recorded on the run.

The attempt count lives in the database, not in the task message. Before it POSTs, an attempt is claimed
with a compare-and-set on that count, and only once the backoff since the previous attempt has passed: two
messages for one delivery (a redelivered message, the retry and the tick's re-send) never make the same
attempt, nor two attempts within one backoff. Delivery is still at-least-once — a worker that dies during
a POST cannot know whether the receiver got it, and the next attempt sends it again — so every POST carries
a delivery id, stable across attempts, for the receiver to deduplicate on. Delivery never touches the verdict:
a dead webhook only ends as `failed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from contracts.settings import Settings
from db import repositories as repo
from db.base import utcnow
from db.models import AuditRun
from db.session import session_scope
from services import webhook_targets
from services.audit_states import WEBHOOK_DELIVERED, WEBHOOK_FAILED, WEBHOOK_PENDING
from services.errors import ConfigError

USER_AGENT = "advaudit-webhook/1"
MAX_ERROR_CHARS = 500
# A retry may run this fraction of its backoff early (clocks of two worker hosts differ a little).
EARLY_FRACTION = 0.1


def _default(name: str):
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class WebhookSettings:
    """The webhook_* settings (contracts.settings declares them and their defaults)."""

    max_attempts: int = _default("webhook_max_attempts")
    backoff_s: float = _default("webhook_backoff_s")  # wait before attempt n + 1 = backoff_s · 2^(n − 1)
    timeout_s: float = _default("webhook_timeout_s")
    public_url: str | None = _default("public_url")  # base URL of the API for links; paths only when None
    allow_private: bool = _default("webhook_allow_private")  # POST to loopback, private, … addresses too

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSettings:
        return cls(
            max_attempts=settings.webhook_max_attempts,
            backoff_s=settings.webhook_backoff_s,
            timeout_s=settings.webhook_timeout_s,
            public_url=settings.public_url,
            allow_private=settings.webhook_allow_private,
        )

    def wait_after(self, attempts: int) -> float:
        """Seconds between attempt `attempts` and the next one (0 before the first)."""
        return self.backoff_s * 2 ** (attempts - 1) if attempts else 0.0

    def next_attempt_at(self, run: AuditRun) -> datetime:
        """When the next attempt of `run`'s pending delivery is due."""
        last = run.webhook_at if run.webhook_attempts else run.finished_at
        return (last or utcnow()) + timedelta(seconds=self.wait_after(run.webhook_attempts))


def delivery_id(run_id: int) -> str:
    """The same for every attempt at delivering one run's summary: the receiver's deduplication key."""
    return f"advaudit-audit-run-{run_id}"


def _iso(value) -> str | None:
    return None if value is None else value.isoformat()


def payload(run: AuditRun, public_url: str | None, attempt: int = 1) -> dict[str, Any]:
    """The JSON summary POSTed to the audit's webhook."""
    base = (public_url or "").rstrip("/")
    audit = run.audit
    comparisons = (run.result or {}).get("comparisons", [])
    regressions = [
        {
            "model_name": entry["candidate"]["model_name"],
            "model_version": entry["candidate"]["model_version"],
            "candidate_job_id": entry["candidate"]["job_id"],
            "baseline_job_id": (entry.get("baseline") or {}).get("job_id"),
            **row,
        }
        for entry in comparisons
        for row in entry.get("rows", [])
        if row.get("regressed")
    ]
    return {
        "event": "audit.run.finished",
        "delivery": {"id": delivery_id(run.id), "attempt": attempt},
        "audit": {"id": audit.id, "name": audit.name, "url": f"{base}/api/v1/audits/{audit.id}"},
        "run": {
            "id": run.id,
            "slot": run.slot,
            "trigger": run.trigger,
            "verdict": run.verdict,
            "reason": run.reason,
            "scheduled_for": _iso(run.scheduled_for),
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "url": f"{base}/api/v1/audits/{audit.id}/runs/{run.id}",
        },
        "regressions": regressions,
        "comparisons": comparisons,
        "errors": (run.result or {}).get("errors", []),
    }


@dataclass(frozen=True)
class Attempt:
    """The outcome of one delivery attempt; `retry_in_s` is set when another attempt should follow."""

    status: str | None  # delivered, failed, pending (will retry), or None when this call sent nothing
    attempts: int = 0
    error: str | None = None
    retry_in_s: float | None = None


def _connection(
    target: webhook_targets.WebhookTarget, allow_private: bool
) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
    """URL, extra headers and extensions of the request: to a checked public address unless private ones are allowed.

    The request goes to the very address that was checked (Host header and TLS server name keep the name),
    so a DNS answer that changes between the check and the connection cannot point it elsewhere.
    """
    if allow_private:
        return target.url, {}, {}
    address = webhook_targets.public_addresses(target, must_resolve=True)[0]
    if target.address is not None:
        return target.url, {}, {}
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    return target.url.copy_with(host=str(address)), {"Host": target.url.netloc.decode("ascii")}, extensions


def _post(url: str, body: dict[str, Any], settings: WebhookSettings) -> str | None:
    """POST `body`; None on a 2xx answer, else what went wrong in one line (never the receiver's answer body)."""
    try:
        target = webhook_targets.parse_target(url)
        request_url, headers, extensions = _connection(target, settings.allow_private)
        with httpx.Client(timeout=settings.timeout_s, follow_redirects=False) as client:
            response = client.post(
                request_url,
                json=body,
                extensions=extensions,
                headers={"User-Agent": USER_AGENT, "Idempotency-Key": body["delivery"]["id"], **headers},
            )
    except ConfigError as error:
        return f"refused: {error}"[:MAX_ERROR_CHARS]
    except (
        Exception
    ) as error:  # any failure is a failed attempt, recorded and retried: never a stuck delivery
        return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
    if response.is_success:
        return None
    # Only the status: the body may echo anything, and the error is shown to everyone who can read the audit.
    return f"HTTP {response.status_code} {response.reason_phrase}".strip()[:MAX_ERROR_CHARS]


def _claim(
    run_id: int, sessions: sessionmaker[Session], settings: WebhookSettings
) -> tuple[str, dict[str, Any], int] | Attempt:
    """Claim the next attempt: (url, body, attempt number), or the Attempt to return when there is none to make."""
    now = utcnow()
    with session_scope(sessions) as session:
        run = repo.audits.get_run(session=session, run_id=run_id)
        if run is None or run.webhook_status != WEBHOOK_PENDING or not run.audit.webhook_url:
            return Attempt(None)
        done = run.webhook_attempts
        early_s = EARLY_FRACTION * settings.wait_after(done)
        if done and now < settings.next_attempt_at(run) - timedelta(seconds=early_s):
            return Attempt(
                None, done
            )  # a duplicate message: the scheduled retry (or the tick) makes this attempt
        if (
            done >= settings.max_attempts
        ):  # the last attempt was interrupted (its worker died during the POST)
            error = f"gave up after {done} attempts (the last one was interrupted)"
            if not repo.audits.record_webhook_attempt(
                session=session, run_id=run_id, attempt=done, status=WEBHOOK_FAILED, error=error, at=now
            ):
                return Attempt(None, done)
            return Attempt(WEBHOOK_FAILED, done, error)
        if not repo.audits.claim_webhook_attempt(session=session, run_id=run_id, attempts=done, at=now):
            return Attempt(None, done)  # another message claimed this attempt first
        return run.audit.webhook_url, payload(run, settings.public_url, done + 1), done + 1


def attempt_delivery(run_id: int, sessions: sessionmaker[Session], settings: WebhookSettings) -> Attempt:
    """Make the next delivery attempt of run `run_id`, if it is due and no other caller makes it; record it."""
    claimed = _claim(run_id, sessions, settings)
    if isinstance(claimed, Attempt):
        return claimed
    url, body, attempt = claimed
    # The POST runs outside any transaction: a slow receiver must not hold database locks.
    error = _post(url, body, settings)
    if error is None:
        status, retry_in = WEBHOOK_DELIVERED, None
    elif attempt >= settings.max_attempts:
        status, retry_in = WEBHOOK_FAILED, None
    else:
        status, retry_in = WEBHOOK_PENDING, settings.wait_after(attempt)
    with session_scope(sessions) as session:
        if not repo.audits.record_webhook_attempt(
            session=session, run_id=run_id, attempt=attempt, status=status, error=error, at=utcnow()
        ):
            return Attempt(None, attempt, error)  # the run is gone, or a later attempt was claimed meanwhile
    return Attempt(status, attempt, error, retry_in)
