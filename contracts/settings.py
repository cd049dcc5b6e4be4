"""Service settings from `ADVAUDIT_*` environment variables; every path derives from `data_dir` by default."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024
GIB = 1024 * MIB
# s3://bucket or s3://bucket/prefix, with S3's bucket naming rules (lowercase, 3–63 characters).
S3_URL = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\x00-\x1f]*)?")


class Settings(BaseSettings):
    """Database, broker and storage locations plus service limits.

    `database_url`, `broker_url`, `result_backend` and `artifact_root` left unset follow `data_dir`, so
    `ADVAUDIT_DATA_DIR=/srv/advaudit` alone moves everything (the embedded, SQLite-only set-up).
    """

    model_config = SettingsConfigDict(env_prefix="ADVAUDIT_", extra="ignore")

    data_dir: Path = Field(
        Path("~/.advaudit"),
        description="where the database, broker, artifacts and job "
        "scratch folders of `advaudit serve` live; every path below follows it when unset",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL (default: SQLite in the data directory)"
    )
    broker_url: str | None = Field(None, description="Celery broker (default: the embedded SQLite broker)")
    result_backend: str | None = Field(None, description="Celery result backend (default: SQLite)")
    artifact_root: Path | None = Field(
        None,
        description="the local artifact store's folder, unless store_url is set (default: data dir/artifacts)",
    )
    store_url: str | None = Field(
        None,
        description="s3://bucket/prefix: keep artifacts in S3-compatible object storage, so that the API "
        "and workers on any host share them (unset: the local folder ADVAUDIT_ARTIFACT_ROOT)",
    )
    s3_endpoint_url: str | None = Field(
        None, description="the S3 API's URL, e.g. http://minio:9000 (unset: AWS S3 of s3_region)"
    )
    s3_region: str | None = Field(
        None, description="the S3 region (unset: the AWS default chain's, else us-east-1)"
    )
    s3_access_key_id: str | None = Field(
        None,
        description="S3 credentials; unset: the standard AWS chain (AWS_ACCESS_KEY_ID …, instance roles)",
    )
    s3_secret_access_key: SecretStr | None = Field(None, description="the secret of s3_access_key_id")
    s3_multipart_threshold_bytes: int = Field(
        64 * MIB, ge=5 * MIB, description="objects from this size up go to S3 as multipart uploads"
    )
    s3_multipart_chunk_bytes: int = Field(
        16 * MIB, ge=5 * MIB, description="the part size of multipart uploads and ranged downloads"
    )
    s3_max_attempts: int = Field(
        5, ge=1, le=20, description="tries of one S3 request (with backoff) before the store counts as down"
    )
    s3_timeout_s: float = Field(30.0, gt=0, description="connect and read timeout of one S3 request")
    cache_dir: Path | None = Field(
        None, description="local copies of objects from S3, by sha256 (default: data dir/cache)"
    )
    cache_max_bytes: int = Field(
        20 * GIB, gt=0, description="size bound of the local cache; least recently used copies go first"
    )
    device: str = Field(
        "auto", description="the device of jobs whose own device is auto: auto, cpu, cuda, cuda:N"
    )
    max_upload_bytes: int = Field(512 * MIB, gt=0, description="largest model or dataset upload (413 beyond)")
    auth: Literal["auto", "required", "off"] = Field(
        "auto", description="bearer tokens: required, off, or auto (required unless listening on loopback)"
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="host names answered besides the loopback names and the listen address "
        "(comma-separated; *.example.org matches subdomains, * any); checked when auth is off or this is set",
    )
    progress_interval_s: float = Field(0.5, ge=0, description="how often a job writes its progress at most")
    heartbeat_interval_s: float = Field(
        1.0, gt=0, le=60, description="how often a running job writes its heartbeat and reads its cancel flag"
    )
    job_time_limit_s: int = Field(
        6 * 3600,
        gt=0,
        description="a job stops at its next check after running this "
        'long and fails with "exceeded the time limit"',
    )
    job_kill_grace_s: float = Field(
        10.0,
        gt=0,
        description="a job still running this long after it was told to "
        "stop (cancel, time limit) is ended and its process killed",
    )
    job_max_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="runs of a job lost with their worker (died, "
        "killed) before it fails instead of running again",
    )
    shard_samples: int = Field(
        10_000,
        ge=0,
        description="a job whose shards option is unset is cut into one shard per this many samples "
        "(whole batches), each a task any worker takes; 0 never cuts a job by itself",
    )
    job_lease_s: float = Field(
        120.0,
        gt=0,
        description="a running job whose heartbeat is older than this is taken for dead and queued again",
    )
    visibility_timeout_s: int = Field(
        900,
        gt=0,
        description="Redis hands an unacknowledged task back after this "
        "long (a worker host that died); must exceed the lease",
    )
    audit_tick_s: float = Field(
        30.0,
        gt=0,
        description="how often beat sends the audit tick (due runs start, finished ones get their verdict)",
    )
    audit_min_interval_s: int = Field(
        60, gt=0, description="the shortest interval schedule an audit may have"
    )
    audit_run_timeout_s: int = Field(
        24 * 3600,
        gt=0,
        description="an audit run whose jobs have not all ended after this long gets an error verdict",
    )
    webhook_max_attempts: int = Field(5, ge=1, le=50, description="deliveries tried per finished audit run")
    webhook_backoff_s: float = Field(
        10.0, ge=0, description="wait before a webhook's second attempt, doubled after each failed one"
    )
    webhook_timeout_s: float = Field(10.0, gt=0, description="how long one webhook delivery may take")
    webhook_allow_private: bool = Field(
        False, description="also POST to loopback, private and link-local addresses (off: an SSRF guard)"
    )
    public_url: str | None = Field(
        None,
        description="the API's base URL as users reach it, for links in "
        "webhook payloads (paths only when unset)",
    )

    @field_validator("store_url")
    @classmethod
    def _check_store_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not S3_URL.fullmatch(value):
            raise ValueError(
                f"store_url must be s3://bucket or s3://bucket/prefix (a lowercase S3 bucket name), got {value!r}"
            )
        return value.rstrip("/")

    @field_validator("data_dir", "artifact_root", "cache_dir")
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
        if self.cache_dir is None:
            self.cache_dir = root / "cache"
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()


def clear_settings_cache() -> None:
    """Forget the cached settings so the next get_settings() re-reads the environment (tests, CLI flags)."""
    get_settings.cache_clear()
