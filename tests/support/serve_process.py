"""`advaudit serve` as a subprocess for end-to-end tests: started on a free port, stopped with its workers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.env import free_port

EXECUTABLE = shutil.which("advaudit") or str(Path(sys.executable).parent / "advaudit")
READY_TIMEOUT_S = 90.0


@dataclass
class Served:
    process: subprocess.Popen
    url: str  # http://127.0.0.1:PORT
    data_dir: Path


def children(pid: int) -> set[int]:
    """Direct child processes of `pid` (Linux /proc)."""
    found: set[int] = set()
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`: its children, theirs, and so on."""
    found, todo = set(), [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in found and alive(child):
                found.add(child)
                todo.append(child)
    return found


def command(pid: int) -> str:
    """The command line of `pid`, for messages (empty once it is gone)."""
    try:
        return f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace"
        )
    except FileNotFoundError:
        return f"{pid}: (gone)"


def parent_of(pid: int) -> int:
    """The parent process id of `pid` (Linux /proc)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def workers(pid: int) -> set[int]:
    """serve's Celery workers, not its other children (the upload-validation forkserver and its helpers)."""
    found = set()
    for child in children(pid):
        with contextlib.suppress(FileNotFoundError):
            if alive(child) and b"celery" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.add(child)
    return found


@contextlib.contextmanager
def serving(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[Served]:
    """Run `advaudit serve` on `data_dir` until the block ends; ADVAUDIT_* variables come only from `env`."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ADVAUDIT_")} | (env or {})
    process = subprocess.Popen(
        [EXECUTABLE, "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    served = Served(process, f"http://127.0.0.1:{port}", data_dir)
    started: set[int] = set()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                # Celery's SQLite transport cannot broadcast, so the embedded workers do not answer pings:
                # the database answering is the readiness signal; jobs wait in the queue for the workers.
                if httpx.get(f"{served.url}/api/v1/health", timeout=5).json()["database"]["ok"]:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                pytest.fail(f"advaudit serve exited: {process.stdout.read()}")
            if time.monotonic() > deadline:
                pytest.fail(f"advaudit serve did not answer within {READY_TIMEOUT_S:g} s")
            time.sleep(0.5)
        yield served
    finally:
        started = workers(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # serve stops its workers itself
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        for pid in started:  # each leads a process group of its own (with its beat): whatever serve left
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def cli(url: str, *args: str) -> subprocess.CompletedProcess:
    """Run `advaudit *args` as a client of the server at `url`."""
    env = {**os.environ, "ADVAUDIT_SERVER": url, "COLUMNS": "200"}
    return subprocess.run([EXECUTABLE, *args], capture_output=True, text=True, env=env, timeout=180)
