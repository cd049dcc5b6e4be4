"""Stopping `advaudit serve` (SIGTERM, as systemd or `kill` do) stops its embedded workers too."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support.serve_process import alive, serving, workers

pytestmark = pytest.mark.timeout(180)


def test_sigterm_stops_the_api_and_the_worker(tmp_path):
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs Linux /proc to find the worker process")
    with serving(tmp_path) as served:
        logs = [tmp_path / "worker.log", tmp_path / "control.log"]  # the evaluation and control workers
        deadline = time.monotonic() + 120
        started: set[int] = set()
        while time.monotonic() < deadline and len(started) < 2:
            if all(log.is_file() and "ready." in log.read_text(errors="replace") for log in logs):
                started = workers(served.process.pid)
            time.sleep(0.3)
        assert len(started) == 2, "the embedded workers did not come up"

        served.process.send_signal(signal.SIGTERM)  # to serve alone, not its process group
        served.process.wait(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(alive(pid) for pid in started):
            time.sleep(0.2)
        assert not any(alive(pid) for pid in started), "an embedded worker outlived advaudit serve"
