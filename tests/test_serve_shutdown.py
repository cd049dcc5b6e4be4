"""Stopping `advaudit serve` (SIGTERM, as systemd or `kill` do) stops its embedded workers too."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.test_serve import EXECUTABLE

pytestmark = pytest.mark.timeout(180)


def _children(pid: int) -> set[int]:
    """Direct child processes of `pid` (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _is_worker(pid: int) -> bool:
    """A Celery worker, not serve's other children (the upload-validation forkserver and its helpers)."""
    return b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_sigterm_stops_the_api_and_the_worker(tmp_path):
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs Linux /proc to find the worker process")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADVAUDIT_")}
    process = subprocess.Popen([EXECUTABLE, "serve", "--port", str(port), "--data-dir", str(tmp_path)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not workers:
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
                logs = [tmp_path / "worker.log", tmp_path / "control.log"]  # the evaluation and control workers
                if all(log.is_file() and "ready." in log.read_text(errors="replace") for log in logs):
                    workers = {pid for pid in _children(process.pid) if _alive(pid) and _is_worker(pid)}
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert len(workers) == 2, "the embedded workers did not come up"

        process.send_signal(signal.SIGTERM)  # to serve alone, not its process group
        process.wait(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers), "an embedded worker outlived advaudit serve"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for pid in workers:  # each leads a process group of its own (with its beat): clean those up too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
