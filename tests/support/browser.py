"""Browser-test harness: `advaudit serve` on a free loopback port, Debian's chromium under Playwright."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.env import free_port, in_ci, require
from tests.support.serve_process import EXECUTABLE

CHROMIUM = Path(os.environ.get("ADVAUDIT_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
START_TIMEOUT_S = 90
DEMO_MODELS = ("gap-cnn", "dilated-cnn")  # a CAM head and a Grad-CAM net with dilated convolutions
JOB_CONFIG = {
    "eps": [0, "2/255", "8/255"],
    "targeted": "next",
    "limit": 48,
    "batch_size": 48,
    "device": "cpu",
    "cam_samples": 4,
    "triptychs": 2,
}
VIEWPORT = {"width": 1366, "height": 800}  # a laptop screen
TIMEOUT_MS = 15_000


def sync_playwright():
    """Playwright's entry point and a chromium binary, or a skip (a failure under CI)."""
    module = require("playwright.sync_api")
    if not CHROMIUM.is_file():
        message = f"{CHROMIUM} is missing: `bash scripts/ensure_tools.sh` installs Debian's chromium"
        if in_ci():
            pytest.fail(f"{message} (CI is set, so this is a failure, not a skip)", pytrace=False)
        pytest.skip(message)
    return module.sync_playwright


def launch(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@dataclass
class Server:
    url: str
    data_dir: Path
    token: str
    api: httpx.Client = field(repr=False)


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ADVAUDIT_")}
    return {**env, **extra}


@contextmanager
def running_server(data_dir: Path) -> Iterator[Server]:
    """`advaudit serve` with auth required (the cookie path is the one under test) and one token."""
    env = _env(ADVAUDIT_AUTH="required")
    created = subprocess.run(
        [EXECUTABLE, "token", "create", "dashboard-tests", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    token = created.stdout.strip().splitlines()[-1]
    port = free_port()
    log = open(data_dir / "serve.log", "wb")  # noqa: SIM115 (a file, not a pipe: a full pipe would block it)
    process = subprocess.Popen(
        [EXECUTABLE, "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    api = httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=120)
    try:
        _wait_until_up(url, process, data_dir)
        yield Server(url=url, data_dir=data_dir, token=token, api=api)
    finally:
        api.close()
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def _wait_until_up(url: str, process: subprocess.Popen, data_dir: Path) -> None:
    """The API answers and the embedded worker says it is ready (it cannot be pinged over SQLite).

    Submitting while the worker is still creating its broker tables has been seen to fail with a 503.
    """
    worker_log = data_dir / "worker.log"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            api_up = httpx.get(f"{url}/api/v1/health", timeout=5).json()["database"]["ok"]
        except httpx.HTTPError:
            api_up = False
        if api_up and worker_log.is_file() and " ready." in worker_log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            pytest.fail(f"advaudit serve exited: {_tail(data_dir / 'serve.log')}")
        time.sleep(0.5)
    pytest.fail(
        f"advaudit serve or its worker did not start within {START_TIMEOUT_S} s; "
        f"serve: {_tail(data_dir / 'serve.log')}\nworker: {_tail(worker_log)}"
    )


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else f"(no {path.name})"


def wait_for_jobs(api: httpx.Client, job_ids: list[int], data_dir: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    pending = set(job_ids)
    while pending and time.monotonic() < deadline:
        for job_id in sorted(pending):
            job = api.get(f"/jobs/{job_id}").json()
            if job["status"] in ("failed", "cancelled"):
                pytest.fail(f"job {job_id} {job['status']}: {job['error']}")
            if job["status"] == "succeeded":
                pending.discard(job_id)
        time.sleep(0.5)
    if pending:
        pytest.fail(
            f"jobs {sorted(pending)} did not finish within {timeout_s} s; the worker log ends:\n"
            f"{_tail(data_dir / 'worker.log')}"
        )


class PageWatch:
    """Collects what must not happen on a page: console errors, script errors, failed or refused requests."""

    def __init__(self, page) -> None:
        self.problems: list[str] = []
        page.on(
            "console",
            lambda message: message.type == "error" and self.problems.append(f"console: {message.text}"),
        )
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on(
            "requestfailed",
            lambda request: self.problems.append(f"request failed: {request.url} ({request.failure})"),
        )
        page.on(
            "response",
            lambda response: (
                response.status >= 400 and self.problems.append(f"HTTP {response.status}: {response.url}")
            ),
        )

    def assert_clean(self, what: str) -> None:
        assert not self.problems, f"{what}: " + "; ".join(self.problems)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def open_clean(context, url: str, name: str):
    """Open `url`, wait until the network is quiet, check it stayed clean, and keep a screenshot."""
    page = context.new_page()
    watch = PageWatch(page)
    response = page.goto(url, wait_until="networkidle")
    assert response.status == 200, f"{url}: HTTP {response.status}"
    watch.assert_clean(url)
    screenshot(page, name)
    return page


def plot_traces(page, element_id: str) -> list[dict]:
    """Name and point count of every trace Plotly drew into the element."""
    return page.evaluate(
        """id => (document.getElementById(id).data || []).map(
        trace => ({name: trace.name || "", points: (trace.y || []).length}))""",
        element_id,
    )
