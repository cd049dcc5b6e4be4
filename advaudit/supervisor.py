"""The embedded worker of `advaudit serve`: a child process, started again whenever it dies.

A model's own code can crash the worker (a segfault in an extension, the kernel's OOM killer); the API
stays up because the worker is a separate process, and this supervisor brings the worker back. The job
it was running is queued again by the worker's periodic sweep once its heartbeat is older than the lease.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from advaudit.console import console
from worker.lifeline import LIFELINE_ENV

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0  # a worker that lived this long resets the backoff: it was not crashing at start-up
STOP_TIMEOUT_S = 20.0


class Lifeline:
    """A pipe whose write end only this process holds: its children see end-of-file when it dies, however."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()  # both non-inheritable; the read end is passed explicitly

    def env(self) -> dict[str, str]:
        return {LIFELINE_ENV: str(self.read_fd)}


class SupervisedWorker:
    """Runs `command` with its output appended to `log_path`, restarting it with backoff until stop().

    With a `lifeline`, the worker also dies when this process dies (worker.lifeline watches the pipe).
    """

    def __init__(
        self, command: list[str], log_path: Path, env: dict[str, str], lifeline: Lifeline | None = None
    ) -> None:
        self.command, self.log_path, self.lifeline = command, log_path, lifeline
        self.env = env | (lifeline.env() if lifeline else {})
        self.restarts = 0
        self._process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._supervise, name="advaudit-worker-supervisor", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> subprocess.Popen | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
                # A process group of its own: the worker forks its beat, which must go when the worker goes.
                self._process = subprocess.Popen(
                    self.command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    start_new_session=True,
                    pass_fds=(self.lifeline.read_fd,) if self.lifeline else (),
                )
            return self._process

    def _supervise(self) -> None:
        backoff = FIRST_BACKOFF_S
        while True:
            process = self._spawn()
            if process is None:
                return
            started = time.monotonic()
            code = process.wait()
            _kill_group(process.pid, signal.SIGKILL)  # what it left behind (its beat) would run on twice
            if self._stopping.is_set():
                return
            backoff = FIRST_BACKOFF_S if time.monotonic() - started > STABLE_S else backoff
            self.restarts += 1
            console.print(
                f"[yellow]the embedded worker exited (code {code}); starting it again in "
                f"{backoff:g} s (see {self.log_path})[/yellow]"
            )
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def stop(self) -> None:
        """Stop supervising, then stop the worker: SIGTERM (a warm shutdown), SIGKILL if it lingers."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None and process.poll() is None:
            _kill_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _kill_group(process.pid, signal.SIGKILL)
                process.wait()
        if process is not None:
            _kill_group(process.pid, signal.SIGKILL)
        self._thread.join(timeout=5)


def _kill_group(pgid: int, sig: int) -> None:
    """Signal every process left in the worker's group (none left is fine)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
