"""Service settings from `ADVAUDIT_*` environment variables; every path derives from `data_dir` by default."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Database, broker and storage locations plus service limits.

    `database_url`, `broker_url`, `result_backend` and `artifact_root` left unset follow `data_dir`, so
    `ADVAUDIT_DATA_DIR=/srv/advaudit` alone moves everything (the embedded, SQLite-only set-up).
    """

    model_config = SettingsConfigDict(env_prefix="ADVAUDIT_", extra="ignore")

    data_dir: Path = Path("~/.advaudit")
    database_url: str | None = None
    broker_url: str | None = None
    result_backend: str | None = None
    artifact_root: Path | None = None
    device: str = "auto"
    max_upload_bytes: int = Field(default=512 * MIB, gt=0)
    auth: Literal["auto", "required", "off"] = "auto"
    # Host names the server answers besides the loopback names and its listen address (comma-separated in
    # ADVAUDIT_ALLOWED_HOSTS; "*.example.org" matches subdomains). Checked whenever auth is off, and whenever
    # this list is set: a page whose name rebinds to 127.0.0.1 then cannot talk to the server.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    progress_interval_s: float = Field(default=0.5, ge=0)
    # A running job writes its heartbeat and reads its cancel flag this often (one small UPDATE).
    heartbeat_interval_s: float = Field(default=1.0, gt=0, le=60)
    # A job stops at its next check (between batches, ε values and attack steps) once it has run this long …
    job_time_limit_s: int = Field(default=6 * 3600, gt=0)
    # … and a job that has not stopped this much later (a forward pass that never returns) is killed.
    job_kill_grace_s: float = Field(default=10.0, gt=0)
    # A job whose worker died (or was killed) this many times while running it fails instead of running again.
    job_max_attempts: int = Field(default=3, ge=1, le=100)
    # A running job whose heartbeat is younger than this is left alone by a redelivered task.
    job_lease_s: float = Field(default=120.0, gt=0)
    # Redis redelivers an unacknowledged task after this long (e.g. when a whole worker host died). A job
    # still running then keeps its worker: the redelivered task sees the fresh heartbeat and retries later.
    visibility_timeout_s: int = Field(default=900, gt=0)
    # Regression audits: beat sends one tick this often; it starts due runs and finishes completed ones.
    audit_tick_s: float = Field(default=30.0, gt=0)
    audit_min_interval_s: int = Field(default=60, gt=0)  # the shortest interval schedule accepted
    # A run whose jobs have not all finished after this long gets an `error` verdict (e.g. a lost job).
    audit_run_timeout_s: int = Field(default=24 * 3600, gt=0)
    webhook_max_attempts: int = Field(default=5, ge=1, le=50)
    webhook_backoff_s: float = Field(default=10.0, ge=0)  # doubled after each failed attempt
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # Webhooks go to public addresses only (no loopback, private, link-local, … targets: an SSRF guard);
    # true allows them, e.g. for a receiver on the same host or network.
    webhook_allow_private: bool = False
    # Base URL of the API as its users reach it, for links in webhook payloads (paths only when unset).
    public_url: str | None = None

    @field_validator("data_dir", "artifact_root")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().absolute()

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):  # from the environment: "a.example,b.example"
            value = value.split(",")
        if isinstance(value, list):
            return [str(item).strip().lower() for item in value if str(item).strip()]
        return value

    @property
    def scratch_root(self) -> Path:
        """Where jobs keep their working files while they run (one folder per attempt, removed after)."""
        return self.data_dir / "scratch"

    @model_validator(mode="after")
    def _derive_from_data_dir(self) -> Settings:
        # Field defaults cannot see each other, so the derived ones are filled in here.
        root = self.data_dir
        if not self.database_url:
            self.database_url = f"sqlite:///{root}/advaudit.db"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{root}/broker.db"
        if not self.result_backend:
            self.result_backend = f"db+sqlite:///{root}/results.db"
        if self.artifact_root is None:
            self.artifact_root = root / "artifacts"
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()


def clear_settings_cache() -> None:
    """Forget the cached settings so the next get_settings() re-reads the environment (tests, CLI flags)."""
    get_settings.cache_clear()
