"""Settings: everything derives from data_dir unless set; ADVAUDIT_* variables override."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts.settings import Settings, clear_settings_cache, get_settings

VARIABLES = (
    "DATA_DIR",
    "DATABASE_URL",
    "BROKER_URL",
    "RESULT_BACKEND",
    "ARTIFACT_ROOT",
    "DEVICE",
    "MAX_UPLOAD_BYTES",
    "AUTH",
    "PROGRESS_INTERVAL_S",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for name in VARIABLES:
        monkeypatch.delenv(f"ADVAUDIT_{name}", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    clear_settings_cache()
    yield
    clear_settings_cache()


def test_defaults_live_under_home(tmp_path):
    s = Settings()
    root = tmp_path / "home" / ".advaudit"
    assert s.data_dir == root
    assert s.database_url == f"sqlite:///{root}/advaudit.db"
    assert s.broker_url == f"sqla+sqlite:///{root}/broker.db"
    assert s.result_backend == f"db+sqlite:///{root}/results.db"
    assert s.artifact_root == root / "artifacts"
    assert (s.device, s.auth, s.max_upload_bytes, s.progress_interval_s) == ("auto", "auto", 512 * 2**20, 0.5)


def test_derived_defaults_follow_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ADVAUDIT_DATA_DIR", str(tmp_path / "srv"))
    s = Settings()
    assert s.database_url == f"sqlite:///{tmp_path}/srv/advaudit.db"
    assert s.broker_url == f"sqla+sqlite:///{tmp_path}/srv/broker.db"
    assert s.artifact_root == tmp_path / "srv" / "artifacts"
    assert Settings(data_dir="~/x").data_dir == tmp_path / "home" / "x"


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("ADVAUDIT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ADVAUDIT_DATABASE_URL", "postgresql+psycopg://u@db/advaudit")
    monkeypatch.setenv("ADVAUDIT_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("ADVAUDIT_AUTH", "required")
    monkeypatch.setenv("ADVAUDIT_MAX_UPLOAD_BYTES", "1024")
    s = Settings()
    assert s.database_url == "postgresql+psycopg://u@db/advaudit"
    assert s.broker_url == "redis://redis:6379/0"
    assert s.result_backend == f"db+sqlite:///{tmp_path}/results.db"  # unset ones still derive
    assert (s.auth, s.max_upload_bytes) == ("required", 1024)


@pytest.mark.parametrize(
    ("name", "value"), [("AUTH", "maybe"), ("MAX_UPLOAD_BYTES", "0"), ("PROGRESS_INTERVAL_S", "-1")]
)
def test_invalid_values_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(f"ADVAUDIT_{name}", value)
    with pytest.raises(ValidationError):
        Settings()


def test_get_settings_is_cached_until_cleared(monkeypatch, tmp_path):
    first = get_settings()
    monkeypatch.setenv("ADVAUDIT_DATA_DIR", str(tmp_path / "other"))
    assert get_settings() is first
    clear_settings_cache()
    assert get_settings().data_dir == Path(tmp_path / "other")
