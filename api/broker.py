"""The API's one Celery *client*: sends tasks by name (contracts.tasks) and probes the broker.

It never imports the worker code; tests/api/test_app.py asserts every name it sends is a registered task.
"""

from __future__ import annotations

from typing import Any, Protocol

from celery import Celery

from contracts import embedded_broker
from contracts.tasks import Queue, Task
from db.models import Job, TransferJob

CONNECT_TIMEOUT_S = 2.0
PING_TIMEOUT_S = 1.0
# A dead broker must not hold a submit request for long: a few quick retries, then the job is marked.
SEND_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.25, "interval_max": 0.5}


class Broker(Protocol):
    """What the API needs from a task queue: send a job or an audit run, say whether broker and workers answer."""

    def send(self, job: Job) -> None: ...

    def launch_audit_run(self, run_id: int) -> None: ...

    def send_transfer(self, transfer_job: TransferJob) -> None: ...

    def status(self) -> dict[str, Any]: ...


class CeleryBroker:
    """A Celery client on `broker_url`; nothing connects until the first send or status call."""

    def __init__(self, broker_url: str) -> None:
        # Celery's SQLAlchemy transport (the embedded SQLite broker) has no broadcast: workers cannot be pinged.
        self.can_ping = not broker_url.startswith("sqla+")
        self.app = Celery("advaudit-api", broker=broker_url, set_as_current=False)
        self.app.conf.update(
            broker_connection_timeout=CONNECT_TIMEOUT_S,
            task_default_queue=Queue.EVALUATIONS,
            broker_connection_retry_on_startup=False,
        )
        if embedded_broker.is_embedded(broker_url):
            self.app.conf.broker_transport_options = embedded_broker.transport_options()

    def send(self, job: Job) -> None:
        """Enqueue job `job.id` (the id only: the worker re-reads the row)."""
        self.app.send_task(
            Task.EVALUATE,
            args=[job.id],
            queue=job.queue or Queue.EVALUATIONS,
            retry=True,
            retry_policy=SEND_RETRY_POLICY,
        )

    def send_transfer(self, transfer_job: TransferJob) -> None:
        """Enqueue transfer job `transfer_job.id` on its queue (the id only)."""
        self.app.send_task(
            Task.TRANSFER,
            args=[transfer_job.id],
            queue=transfer_job.queue or Queue.EVALUATIONS,
            retry=True,
            retry_policy=SEND_RETRY_POLICY,
        )

    def launch_audit_run(self, run_id: int) -> None:
        """Enqueue the launch of audit run `run_id` on the control queue."""
        self.app.send_task(
            Task.AUDIT_LAUNCH, args=[run_id], queue=Queue.CONTROL, retry=True, retry_policy=SEND_RETRY_POLICY
        )

    def status(self) -> dict[str, Any]:
        """{"broker": {"ok", "error"}, "workers": {"count", "names", "error"}} within a few seconds."""
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(
                    max_retries=1, interval_start=0, interval_step=0, timeout=CONNECT_TIMEOUT_S
                )
        except Exception as error:  # any failure means the same to a health check: not reachable
            return {
                "broker": {"ok": False, "error": _one_line(error)},
                "workers": {"count": None, "names": [], "error": "broker unreachable"},
            }
        if not self.can_ping:
            return {
                "broker": {"ok": True, "error": None},
                "workers": {"count": None, "names": [], "error": "this broker cannot ping workers"},
            }
        try:
            replies = self.app.control.ping(timeout=PING_TIMEOUT_S) or []
        except Exception as error:  # some transports cannot broadcast; the broker itself is still fine
            return {
                "broker": {"ok": True, "error": None},
                "workers": {"count": None, "names": [], "error": _one_line(error)},
            }
        names = sorted(name for reply in replies for name in reply)
        return {
            "broker": {"ok": True, "error": None},
            "workers": {"count": len(names), "names": names, "error": None},
        }


def _one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
