"""The distributed deployment description: docker-compose.yml validates and has every role."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.env import in_ci

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_is_valid_and_complete():
    if shutil.which("docker-compose") is None:
        if in_ci():
            pytest.fail("docker-compose is missing: scripts/ensure_tools.sh installs it")
        pytest.skip("docker-compose is not installed")
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    rendered = result.stdout
    for service in ("api:", "worker:", "worker-cpu:", "beat:", "redis:", "postgres:"):
        assert f"\n  {service}" in rendered, service
    assert "capabilities:" in rendered and "gpu" in rendered  # the worker's GPU reservation
    for volume in ("postgres-data", "artifacts"):
        assert volume in rendered
    assert (ROOT / "Dockerfile").is_file()


def test_only_the_cpu_worker_takes_the_control_queue():
    """Bookkeeping (audit ticks and verdicts, webhooks, the requeue sweep) never waits behind a GPU job."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]

    def queues(service: str) -> set[str]:
        command = services[service]["command"]
        return set(command[command.index("--queues") + 1].split(","))

    assert queues("worker-cpu") == {"control", "evaluations"}
    assert queues("worker") == {"evaluations", "gpu"}
