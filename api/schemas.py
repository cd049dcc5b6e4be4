"""Request and response bodies (XCreate / XRead), as documented in the OpenAPI schema."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator

from services.limits import MAX_CLASSES
from services.specs import OPTIONS, Option

T = TypeVar("T")

Eps = float | str  # a number or a fraction such as "8/255"
EpsList = list[Eps] | str  # a list, or a comma-separated string as on the command line (one limit for both)
MAX_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL
ModelId = Annotated[int, Field(ge=1, le=MAX_ID)]  # a model id the database can hold
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL characters
NAME_PATTERN = r"^[^\x00-\x1f/\\]+$"  # no control characters, no path separators


def _visible(name: str) -> str:
    stripped = name.strip()
    if not stripped:
        raise ValueError("a name needs at least one visible character, not only spaces")
    return stripped


# The name of a model, dataset or audit: surrounding spaces are dropped, and a blank name is refused.
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=NAME_PATTERN), AfterValidator(_visible)]


class Problem(BaseModel):
    """RFC 9457 problem details: every error response has this shape."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None


def problem_responses(*statuses: int) -> dict[int, dict[str, Any]]:
    """OpenAPI `responses` for error statuses: each answers a problem+json document."""
    return {status: {"model": Problem, "content": {"application/problem+json": {}}} for status in statuses}


class Page(BaseModel, Generic[T]):
    """One page of a list, newest first, with the total count of matching rows."""

    data: list[T]
    count: int
    limit: int
    offset: int


class ModelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    version: str
    sha256: str
    format: str
    arch: str | None
    num_classes: int
    class_names: list[str] | None
    input_shape: list[int]
    mean: list[float] | None
    std: list[float] | None
    size_bytes: int
    created_at: datetime


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    sha256: str
    format: str
    source: str
    num_samples: int
    input_shape: list[int]
    num_classes: int
    class_names: list[str] | None
    size_bytes: int | None
    created_at: datetime


class _JobConfigBase(BaseModel):
    """The `advaudit evaluate` options in snake_case; omitted keys take the CLI defaults.

    Strict: JSON `true` is not the ε 1.0, nor "yes" a boolean. The dashboard's form, whose values are all
    text, validates with strict=False. The fields come from services.specs.OPTIONS, declared once.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                raise ValueError(
                    f"unknown option(s) {', '.join(map(str, unknown))}; "
                    f"known options: {', '.join(cls.model_fields)}"
                )
        return data

    def evaluation_options(self) -> dict[str, Any]:
        """Keyword arguments for EvaluationConfig (unset and null options left to its defaults)."""
        return {key: value for key, value in self.model_dump(exclude_unset=True).items() if value is not None}


# Per kind of option: its JSON type, and whether the API shows the declared default (ε values: a text form).
_OPTION_TYPES: dict[str, Any] = {
    "eps_list": EpsList,
    "eps": Eps,
    "policy": str,
    "int": int,
    "number": float,
    "names": str | list[str],
    "choice": str,
    "flag": bool,
    "text": str,
}


def _option_field(option: Option) -> tuple[Any, Any]:
    annotation = _OPTION_TYPES[option.kind]
    text_default = option.kind in ("eps_list", "eps", "policy", "names") or option.default is None
    if text_default:
        annotation = annotation | None
    return annotation, Field(
        default=None if text_default else option.default,
        ge=option.minimum,
        le=option.maximum,
        max_length=option.max_length,
        description=option.describe(),
    )


JobConfig = create_model(
    "JobConfig",
    __base__=_JobConfigBase,
    __doc__=_JobConfigBase.__doc__,
    **{option.name: _option_field(option) for option in OPTIONS},
)


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: int = Field(ge=1, le=MAX_ID)
    dataset_id: int = Field(ge=1, le=MAX_ID)
    config: JobConfig = Field(default_factory=JobConfig)


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    model_id: int
    dataset_id: int
    status: str
    progress: float
    attempts: int
    error: str | None
    lost_reason: str | None = Field(
        description="why the last attempt ended without an outcome (its worker "
        "died or was killed), if one did; the job then ran again"
    )
    queue: str | None
    config: dict[str, Any]
    cancel_requested: bool
    worker_host: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    shards_total: int | None = Field(
        description="the shards (sample ranges, each a task of its own) the job was cut into; null: one piece"
    )
    shards_done: int = Field(description="shards finished; the one that brings this to shards_total merges")


class ShardRead(BaseModel):
    """One shard of a sharded job: its samples, which worker ran it, how long its sweep took."""

    model_config = ConfigDict(from_attributes=True)

    shard_index: int
    sample_start: int
    sample_stop: int = Field(description="one past the shard's last sample")
    status: str
    progress: float
    attempts: int
    worker_host: str | None
    seconds: float | None = Field(description="its sweep, on its worker")
    error: str | None
    lost_reason: str | None
    started_at: datetime | None
    finished_at: datetime | None


class ArtifactRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    kind: str
    sha256: str
    size_bytes: int
    created_at: datetime


class FailedCheck(BaseModel):
    """A sanity check the evaluation failed: its report name, title, what a failure means, and the numbers."""

    name: str
    title: str
    meaning: str
    detail: str


class CompareRow(BaseModel):
    """One job of a leaderboard; per-ε lists follow CompareRead.eps (null where the job lacks that ε)."""

    job_id: int
    model_id: int
    model_name: str
    model_version: str
    clean_accuracy: float | None
    accuracy: list[float | None] = Field(description="FGSM accuracy per ε")
    attack_success_rate: list[float | None] = Field(description="FGSM attack success rate per ε")
    robust_auc: float | None = Field(
        description="the report's FGSM robust AUC over the job's own ε range (not comparable across jobs "
        "with different ε lists; see fgsm_auc)"
    )
    worst_case_accuracy: list[float | None] = Field(
        description="worst-case robust accuracy per ε: a sample counts as robust only if every attack failed "
        "on it (FGSM accuracy for version 1 reports)"
    )
    ranking_accuracy: float | None = Field(
        description="worst-case accuracy at CompareRead.ranking_eps: what the rows are ranked by"
    )
    worst_case_auc: float | None = Field(
        description="area under the worst-case accuracy–ε curve over CompareRead.shared_eps only, ÷ its range"
    )
    fgsm_auc: float | None = Field(description="FGSM robust AUC over CompareRead.shared_eps only")
    worst_case_source: str = Field(
        description="the attacks of the worst case, or 'FGSM only (report v1)' for version 1 reports"
    )
    report_version: int = Field(description="the report's schema_version (1: FGSM only, no sanity checks)")
    sanity_verdict: str | None = Field(
        description="passed or suspicious (a sanity check failed: the numbers may be overstated); "
        "null for version 1 reports"
    )
    failed_checks: list[FailedCheck]
    flag: str | None = Field(description="the suspicious flag's text (which checks failed, what it means)")
    transfer_accuracy: float | None = Field(
        default=None,
        description="black-box robustness: the model's worst-case accuracy at ranking_eps against examples "
        "crafted on the other sources of its newest succeeded transfer job on this dataset (per sample, "
        "every attack); null without one",
    )
    transfer_job_id: int | None = Field(
        default=None, description="the transfer job transfer_accuracy is from"
    )
    targeted_policy: str | None
    targeted_auc: float | None
    max_target_success_rate: float | None
    cam_drift: float | None
    macs: int | None
    params: int | None


class CompareRead(BaseModel):
    """A leaderboard ranked by worst-case accuracy at `ranking_eps`, an ε every compared job swept."""

    dataset: DatasetRead
    eps: list[float] = Field(description="the union of the jobs' ε values: the per-ε columns")
    eps_255: list[float]
    shared_eps: list[float] = Field(description="the ε values every compared job swept: the ranking grid")
    shared_eps_255: list[float]
    ranking_eps: float | None = Field(
        description="the ε rows are ranked at: 8/255 when every job swept it, else the largest nonzero "
        "shared ε; null when they share none"
    )
    ranking_eps_255: float | None
    ranked_by: str = Field(description="the ranking in words, e.g. 'worst-case accuracy at ε = 8/255'")
    rows: list[CompareRow]
    warnings: list[str]


class ComponentHealth(BaseModel):
    ok: bool
    error: str | None = None


class WorkerHealth(BaseModel):
    count: int | None
    names: list[str]
    error: str | None = None


class HealthRead(BaseModel):
    status: str = Field(description="ok, degraded (broker or workers missing) or down (database unreachable)")
    database: ComponentHealth
    broker: ComponentHealth
    workers: WorkerHealth
    auth_required: bool


class ModelUploadForm(BaseModel):
    """Form fields of POST /models besides `file`; numbers lists are comma-separated."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    arch: str | None = Field(
        default=None, max_length=200, pattern=NO_NUL, description="architecture of a weights-only file"
    )
    num_classes: int | None = Field(default=None, ge=2, le=MAX_CLASSES)
    mean: str | None = Field(default=None, description="per-channel mean, e.g. 0.485,0.456,0.406")
    std: str | None = Field(default=None, description="per-channel std, e.g. 0.229,0.224,0.225")
    input_shape: str | None = Field(default=None, description="C,H,W; default: the shape of dataset_id")
    dataset_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="a dataset giving the input shape and class names"
    )


class DatasetUploadForm(BaseModel):
    """Form fields of POST /datasets besides `file`."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    image_size: int | None = Field(
        default=None, ge=1, le=4096, description="resize ImageFolder images to N×N"
    )


# What an upload endpoint may answer besides the common errors: a file over the size limit, not a
# multipart body or not a supported file type.
UPLOAD_ERRORS = problem_responses(413, 415)


def multipart_body(form: type[BaseModel]) -> dict[str, Any]:
    """An OpenAPI requestBody for a registration: a streamed multipart upload (`file` plus the fields of `form`),
    or by reference, `uri` of an object in the store's bucket instead of `file` (multipart or JSON)."""
    schema = form.model_json_schema()
    schema.pop("additionalProperties", None)
    uri = {
        "type": "string",
        "maxLength": 2048,
        "description": "instead of file: s3://bucket/key of an object already in the server's bucket "
        "(needs ADVAUDIT_STORE_URL=s3://…; the upload size limit does not apply)",
    }
    multipart = {
        **schema,
        "properties": {"file": {"type": "string", "format": "binary"}, "uri": uri, **schema["properties"]},
    }
    by_reference = {
        **schema,
        "properties": {"uri": uri, **schema["properties"]},
        "required": ["uri", *schema.get("required", [])],
        "additionalProperties": False,
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": multipart},
                "application/json": {"schema": by_reference},
            },
        }
    }
