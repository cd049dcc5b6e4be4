"""Real services for the reliability tests: PostgreSQL databases, Redis, and Celery worker processes.

Each test module gets a fresh PostgreSQL database (migrated with Alembic) and its own queue; the session
claims a Redis database index that was empty, so parallel runs on one Redis never share keys. Workers are
started as a deployment would start them, each in a process group of its own so a test can SIGKILL the
whole worker (main process and pool children) at once.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from celery import Celery
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from contracts.tasks import Task
from db import migrate
from db import repositories as repo
from db.models import Artifact, CamAuditRecord, Job, SweepPoint
from db.session import make_engine, make_session_factory, session_scope
from db.storage import LocalArtifactStore
from tests.support.builders import add_demo_model, add_digits
from tests.support.env import free_port, in_ci
from tests.support.postgres import POSTGRES_URL

REDIS_URL = os.environ.get("ADVAUDIT_TEST_REDIS_URL", "redis://127.0.0.1:6379")
REPO_ROOT = Path(__file__).resolve().parents[2]
CLAIM_KEY = "advaudit-test:claimed-by"
TERMINAL = ("succeeded", "failed", "cancelled")
# Short enough for the tests to see redelivery within seconds (production keeps the defaults).
WORKER_SETTINGS = {
    "ADVAUDIT_VISIBILITY_TIMEOUT_S": "10",
    "ADVAUDIT_JOB_LEASE_S": "5",
    "ADVAUDIT_PROGRESS_INTERVAL_S": "0.2",
    "ADVAUDIT_JOB_TIME_LIMIT_S": "300",
    "ADVAUDIT_DEVICE": "cpu",
}
T = TypeVar("T")


def unavailable(message: str) -> None:
    """Skip the test locally; fail it in CI, where a skipped service test would hide a broken pipeline."""
    if in_ci():
        pytest.fail(
            f"{message}; CI is set, so this is a failure: run scripts/ensure_services.sh", pytrace=False
        )
    pytest.skip(f"{message}; run scripts/ensure_services.sh")


def require_redis(url: str = REDIS_URL) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        unavailable(f"Redis at {url} is unreachable ({type(error).__name__}: {error})")


def claim_redis_db(url: str = REDIS_URL) -> tuple[int, str]:
    """(index, token) of a Redis database that was empty and is now marked as this session's."""
    token = uuid.uuid4().hex
    for index in random.sample(range(1, 16), 15):
        client = redis.Redis.from_url(url, db=index)
        try:
            if client.set(CLAIM_KEY, token, nx=True, ex=6 * 3600):
                if client.dbsize() == 1:
                    return index, token
                client.delete(CLAIM_KEY)  # used by someone who does not claim: leave it alone
        finally:
            client.close()
    pytest.fail(f"no empty Redis database among 1..15 at {url}", pytrace=False)


def release_redis_db(index: int, token: str, url: str = REDIS_URL) -> None:
    """Flush the claimed database: it was empty when claimed, so every key in it is this session's."""
    client = redis.Redis.from_url(url, db=index)
    try:
        if client.get(CLAIM_KEY) == token.encode():
            client.flushdb()
    finally:
        client.close()


def create_database() -> tuple[str, str]:
    """(name, URL) of a new, migrated PostgreSQL database."""
    name = f"advaudit_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    return name, url


def drop_database(name: str) -> None:
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def wait_for(
    condition: Callable[[], T],
    timeout_s: float,
    what: str,
    diagnose: Callable[[], str] = str,
    interval_s: float = 0.1,
) -> T:
    """Poll until `condition()` is truthy and return it; fail after `timeout_s` with `diagnose()`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{diagnose()}", pytrace=False)
        time.sleep(interval_s)


class Worker:
    """`celery worker` in a process group of its own, logging to a file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        with open(log, "ab") as handle:
            self.process = subprocess.Popen(
                command,
                env=env,
                cwd=REPO_ROOT,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        kept = [line for line in text.splitlines() if "USDT" not in line]
        return (
            f"--- {self.name} ({'alive' if self.alive() else f'exit {self.process.returncode}'})\n"
            + "\n".join(kept[-lines:])
        )

    def wait_ready(self, timeout_s: float = 90) -> Worker:
        def ready() -> bool:
            if not self.alive():
                pytest.fail(f"worker {self.name} exited during start-up\n{self.log_tail()}", pytrace=False)
            return f"{self.name} ready." in self.log.read_text(errors="replace")

        wait_for(ready, timeout_s, f"worker {self.name} to start", self.log_tail, interval_s=0.2)
        return self

    def kill(self, sig: int = signal.SIGKILL, timeout_s: float = 30) -> None:
        """Signal the whole group (main process and pool children) and wait for the main process."""
        if self.alive():
            self._signal_group(sig)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait(timeout=10)
        if sig != signal.SIGKILL:  # after a warm shutdown no pool child may outlive its worker
            self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)


class ServiceEnv:
    """One PostgreSQL database, one broker and queue, an artifact store, and the workers serving them."""

    def __init__(self, database_url: str, broker_url: str, root: Path) -> None:
        self.database_url, self.broker_url, self.root = database_url, broker_url, root
        self.queue = f"advaudit-test-{uuid.uuid4().hex[:8]}"
        self.engine = make_engine(database_url)
        self.sessions = make_session_factory(self.engine)
        self.store = LocalArtifactStore(root / "artifacts")
        self.client = Celery("advaudit-test-client", broker=broker_url)
        self.workers: list[Worker] = []

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("ADVAUDIT_")}
        return (
            env
            | WORKER_SETTINGS
            | {
                "ADVAUDIT_DATABASE_URL": self.database_url,
                "ADVAUDIT_BROKER_URL": self.broker_url,
                "ADVAUDIT_RESULT_BACKEND": self.broker_url,
                "ADVAUDIT_ARTIFACT_ROOT": str(self.root / "artifacts"),
                "ADVAUDIT_DATA_DIR": str(self.root / "data"),
                "OMP_NUM_THREADS": "1",  # two workers share two cores here
                "CUDA_VISIBLE_DEVICES": "",
                "PYTHONUNBUFFERED": "1",
            }
        )

    def start_worker(self, label: str, settings: dict[str, str] | None = None) -> Worker:
        """A prefork worker (one pool child) on this env's queue; `settings` override ADVAUDIT_* variables."""
        name = f"{label}-{uuid.uuid4().hex[:6]}@advaudit-test"
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.tasks",
            "worker",
            "--loglevel=INFO",
            "--concurrency=1",
            "--pool=prefork",
            "-Q",
            self.queue,
            f"--hostname={name}",
            "--without-mingle",
            "--without-gossip",
        ]
        worker = Worker(name, command, self.environment() | (settings or {}), self.root / f"{label}.log")
        self.workers.append(worker)
        return worker

    def submit(self, model_id: int, dataset_id: int, config: dict) -> int:
        """What the API does: commit the job row, then enqueue its id by task name."""
        with session_scope(self.sessions) as session:
            job_id = repo.jobs.create(
                session=session, model_id=model_id, dataset_id=dataset_id, config=config, queue=self.queue
            ).id
        self.client.send_task(Task.EVALUATE, args=[job_id], queue=self.queue)
        return job_id

    def job(self, job_id: int) -> Job:
        with session_scope(self.sessions) as session:
            return repo.jobs.get(session=session, job_id=job_id)

    def diagnose(self, job_ids: list[int] = ()) -> str:
        jobs = [self.job(job_id) for job_id in job_ids]
        states = "\n".join(
            f"job {j.id}: {j.status} progress={j.progress:.2f} attempts={j.attempts} "
            f"host={j.worker_host} error={j.error}"
            for j in jobs
        )
        return "\n".join([states, *(worker.log_tail() for worker in self.workers)])

    def wait_until(self, job_id: int, condition: Callable[[Job], bool], timeout_s: float, what: str) -> Job:
        def met() -> Job | None:
            job = self.job(job_id)
            return job if condition(job) else None

        return wait_for(met, timeout_s, f"job {job_id} {what}", lambda: self.diagnose([job_id]))

    def wait_finished(self, job_id: int, timeout_s: float) -> Job:
        return self.wait_until(job_id, lambda job: job.status in TERMINAL, timeout_s, "to finish")

    def row_counts(self, job_id: int) -> dict[str, int]:
        with session_scope(self.sessions) as session:
            return {
                table.__tablename__: session.scalar(
                    select(func.count()).select_from(table).where(table.job_id == job_id)
                )
                for table in (SweepPoint, CamAuditRecord, Artifact)
            }

    def distinct_sweep_points(self, job_id: int) -> int:
        with session_scope(self.sessions) as session:
            return len(
                set(
                    session.execute(
                        select(SweepPoint.attack, SweepPoint.eps).where(SweepPoint.job_id == job_id)
                    ).all()
                )
            )

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.client.close()
        self.engine.dispose()


class RedisServer:
    """A private redis-server whose queued messages survive a restart (append-only file, fsync always)."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.directory, self.port = binary, directory, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(self.directory),
        ]
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(
            self._answers,
            20,
            f"redis-server on port {self.port}",
            lambda: (self.directory / "redis.log").read_text(errors="replace")[-2000:],
        )

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(
                f"redis-server exited: {(self.directory / 'redis.log').read_text()[-2000:]}", pytrace=False
            )
        try:
            return redis.Redis(port=self.port, socket_connect_timeout=1).ping()
        except redis.RedisError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: Redis shuts down cleanly, flushing the append-only file (as `redis-cli shutdown`)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def queue_length(self, queue: str) -> int:
        client = redis.Redis(port=self.port)
        try:
            return client.llen(queue)
        finally:
            client.close()

    def unacknowledged(self) -> int:
        """Messages a worker has taken but not acknowledged yet (kombu keeps them in the "unacked" hash)."""
        client = redis.Redis(port=self.port)
        try:
            return client.hlen("unacked")
        finally:
            client.close()


def open_env(database_url: str, broker_url: str, tmp_path_factory) -> ServiceEnv:
    """A ServiceEnv on that database and broker, with a scratch folder from `tmp_path_factory`."""
    return ServiceEnv(database_url, broker_url, tmp_path_factory.mktemp("service"))


def register_inputs(env: ServiceEnv) -> dict[str, int]:
    """Ids of the demo model and of the two built-in digits splits (test: 360 images, train: 1437)."""
    with session_scope(env.sessions) as session:
        return {
            "model": add_demo_model(session, env.store).id,
            "digits": add_digits(session).id,
            "digits_train": add_digits(session, "digits:train").id,
        }
