"""A running job's link to its row: progress, heartbeat, cancel and time limit, and the watchdog behind them.

The evaluation checks `should_stop()` between batches, ε values and attack steps, so a cancel or the time
limit ends it within one forward pass. A forward pass that never returns cannot check anything: the
watchdog thread then records the outcome itself and kills the process (a prefork pool child, which Celery
replaces; a solo worker, which its supervisor restarts). The heartbeat goes on while a cancel is pending, so
the requeue sweep never mistakes a busy job for a dead one.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum

from db import repositories as repo
from db.errors import StaleJob
from db.session import session_scope
from services.job_states import CANCELLED, FAILED, InvalidTransition

log = logging.getLogger(__name__)


class StopReason(StrEnum):
    CANCELLED = "cancelled"  # a user asked
    TIME_LIMIT = "time limit"  # the job ran past its limit
    LOST = "lost"  # another attempt owns the job now, or it ended elsewhere


def kill_this_process() -> None:
    """SIGKILL ourselves: nothing of a hung forward pass can be unwound, and nothing else is left to save."""
    os.kill(os.getpid(), signal.SIGKILL)


def time_limit_message(limit_s: float) -> str:
    return f"exceeded the time limit of {limit_s:g} s"


class JobControl:
    """Progress, heartbeat and stop flags of one attempt of one job (shared by the job and its watchdog)."""

    # The sweep is most of the work; the last 5 % cover the CAM audit and the result write.
    sweep_share = 0.95

    def __init__(self, context, job_id: int, attempt: int) -> None:
        self.context, self.job_id, self.attempt = context, job_id, attempt
        self.fraction = 0.0
        self.reason: StopReason | None = None
        self._started = time.monotonic()
        self._stop_asked_at: float | None = None
        self._last = 0.0
        self._lock = threading.Lock()  # the watchdog writes too: keep progress monotonic

    def progress(self, stage: str, done: int, total: int) -> None:
        """The evaluation's progress callback: throttled writes, each one a heartbeat."""
        if stage != "sweep":
            return
        self.fraction = self.sweep_share * done / max(total, 1)
        if time.monotonic() - self._last >= self.context.progress_interval_s or done >= total:
            self.beat()

    def beat(self) -> None:
        """Write the current progress and a heartbeat; learn whether the job was cancelled or taken over."""
        with self._lock:
            self._last = time.monotonic()
            with session_scope(self.context.sessions) as session:
                answer = self._report(session)
        if answer.lost:
            self._stop(StopReason.LOST)
        elif answer.cancel_requested:
            self._stop(StopReason.CANCELLED)

    def _report(self, session):
        """Write the progress and heartbeat of this attempt; the answer says whether it is cancelled or lost."""
        return repo.jobs.report_progress(
            session=session, job_id=self.job_id, progress=self.fraction, attempt=self.attempt
        )

    def should_stop(self) -> bool:
        """True once the job must end: cancelled, taken over, or past its time limit (cheap: no I/O)."""
        limit = self.context.time_limit_s
        if limit is not None and self.reason is None and time.monotonic() - self._started > limit:
            self._stop(StopReason.TIME_LIMIT)
        return self.reason is not None

    def overdue(self) -> bool:
        """The job was told to stop more than the kill grace ago and still runs."""
        self.should_stop()
        asked = self._stop_asked_at
        return asked is not None and time.monotonic() - asked > self.context.kill_grace_s

    def _stop(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason, self._stop_asked_at = reason, time.monotonic()

    def end_by_force(self) -> bool:
        """Record the outcome of a job that did not stop; True when the process should now be killed."""
        if self.reason is StopReason.LOST:
            return True  # nothing to record: another attempt owns the job
        status = CANCELLED if self.reason is StopReason.CANCELLED else FAILED
        error = (
            None
            if status == CANCELLED
            else (
                f"{time_limit_message(self.context.time_limit_s)}; it did not stop within "
                f"{self.context.kill_grace_s:g} s more (a forward pass that never returns?), so its process was killed"
            )
        )
        try:
            with session_scope(self.context.sessions) as session:
                job = repo.jobs.get(session=session, job_id=self.job_id)
                repo.jobs.transition(
                    session=session, job=job, new_status=status, attempt=self.attempt, error=error
                )
        except (StaleJob, InvalidTransition):  # it ended meanwhile after all (or another attempt took over)
            return False
        log.error(
            "job %s did not stop %s s after being told to (%s): %s it and killing its process",
            self.job_id,
            self.context.kill_grace_s,
            self.reason,
            status,
        )
        return True


@contextmanager
def watched(control: JobControl, kill: Callable[[], None] = kill_this_process) -> Iterator[None]:
    """Run the watchdog thread while the job runs: heartbeat, cancel and time-limit checks, forced end."""
    context = control.context
    if not context.lease_s and context.time_limit_s is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(context.heartbeat_interval_s):
            try:
                control.beat()
            except Exception:  # a database hiccup must not kill the job; the next beat tries again
                log.warning("job %s: heartbeat failed", control.job_id, exc_info=True)
            if control.overdue() and not done.is_set():
                try:
                    ended = control.end_by_force()
                except Exception:  # the database is gone too: kill anyway, the sweep requeues the job
                    log.exception("job %s: could not record its forced end", control.job_id)
                    ended = True
                if ended and not done.is_set():
                    kill()
                    return

    thread = threading.Thread(target=watch, name=f"advaudit-watchdog-{control.job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
