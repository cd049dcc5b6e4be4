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
    for service in (
        "api:",
        "worker:",
        "worker-cpu:",
        "beat:",
        "redis:",
        "postgres:",
        "minio:",
        "minio-bucket:",
    ):
        assert f"\n  {service}" in rendered, service
    assert "capabilities:" in rendered and "gpu" in rendered  # the worker's GPU reservation
    assert "postgres-data" in rendered
    assert (ROOT / "Dockerfile").is_file()


def test_api_and_workers_share_no_volume_but_one_object_store():
    """Each of them could run on a host of its own: artifacts go through the bucket, never a shared directory."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    roles = ("api", "worker", "worker-cpu")
    volumes = {role: {mount.split(":")[0] for mount in services[role].get("volumes", [])} for role in roles}
    for index, role in enumerate(roles):
        for other in roles[index + 1 :]:
            assert not volumes[role] & volumes[other], (role, other)
    for role in roles:
        environment = services[role]["environment"]
        assert environment["ADVAUDIT_STORE_URL"].startswith("s3://")
        assert environment["ADVAUDIT_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_only_the_cpu_worker_takes_the_control_queue():
    """Bookkeeping (audit ticks and verdicts, webhooks, the requeue sweep) never waits behind a GPU job."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]

    def queues(service: str) -> set[str]:
        command = services[service]["command"]
        return set(command[command.index("--queues") + 1].split(","))

    assert queues("worker-cpu") == {"control", "evaluations"}
    assert queues("worker") == {"evaluations", "gpu"}
