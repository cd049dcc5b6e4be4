"""The API test app's fixtures, shared by tests/api/ and tests/dashboard/ (each conftest imports them): an app
on SQLite in tmp_path with a recording enqueue and a broker that needs no server, a registered dataset and model."""

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
from tests.support.api import FakeBroker, RecordingEnqueue


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
