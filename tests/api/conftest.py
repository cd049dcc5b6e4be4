"""API fixtures: an app on SQLite in tmp_path, a recording enqueue, a broker that needs no server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from contracts.settings import MIB, Settings
from db import migrate
from tests.support import api as helpers


class RecordingEnqueue:
    """Stands in for the Celery client: remembers the job ids it was asked to send."""

    def __init__(self) -> None:
        self.job_ids: list[int] = []
        self.on_send = None  # optional callable(job), run before recording

    def __call__(self, job) -> None:
        if self.on_send is not None:
            self.on_send(job)
        self.job_ids.append(job.id)


class FakeBroker:
    """Answers health probes with a reachable broker and one worker; sending is the enqueue fake's job."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def send(self, job) -> None:  # pragma: no cover - create_app gets its own enqueue in these tests
        raise AssertionError("tests pass a recording enqueue")

    def launch_audit_run(self, run_id: int) -> None:  # pragma: no cover - audit tests record launches
        raise AssertionError("audit tests set app.state.audit_dispatch")

    def status(self) -> dict:
        names = [f"worker{i}@test" for i in range(self.workers)]
        return {
            "broker": {"ok": True, "error": None},
            "workers": {"count": self.workers, "names": names, "error": None},
        }


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory) -> Path:
    """One migrated SQLite file; each test copies it, so start-up only checks the revision."""
    path = tmp_path_factory.mktemp("template") / "advaudit.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def settings(tmp_path, migrated_db) -> Settings:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(migrated_db, data_dir / "advaudit.db")
    return Settings(
        data_dir=data_dir, auth="off", max_upload_bytes=2 * MIB, allowed_hosts=["testserver"]
    )  # the name TestClient sends


@pytest.fixture
def enqueue() -> RecordingEnqueue:
    return RecordingEnqueue()


@pytest.fixture
def app(settings, enqueue):
    return create_app(settings, enqueue=enqueue, broker=FakeBroker(), listen_host="127.0.0.1")


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture
def npz_dataset(client) -> dict:
    """A registered 16-sample 1×32×32 npz dataset with labels 0…9."""
    response = helpers.upload_dataset(client, "tiny", helpers.npz_bytes())
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def gap_model(client, npz_dataset) -> dict:
    """The bundled gap-cnn TorchScript demo model, registered with the dataset's input shape."""
    response = helpers.upload_model(
        client, "gap", helpers.demo_bytes("gap-cnn"), "gap-cnn.pt", dataset_id=npz_dataset["id"]
    )
    assert response.status_code == 201, response.text
    return response.json()
