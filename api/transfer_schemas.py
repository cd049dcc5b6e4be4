"""Request and response bodies of /transfer; the config's fields come from services.transfer_specs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from api.schemas import MAX_ID, ModelId, _JobConfigBase, _option_field
from services.transfer_specs import MAX_TRANSFER_MODELS, TRANSFER_OPTIONS

TransferJobConfig = create_model(
    "TransferJobConfig",
    __base__=_JobConfigBase,
    __doc__="The `advaudit transfer` options in snake_case; omitted keys take the CLI defaults (strict JSON "
    "types, as for evaluation jobs).",
    **{option.name: _option_field(option) for option in TRANSFER_OPTIONS},
)


class TransferCreate(BaseModel):
    """Source × target models on one dataset: every source's examples are evaluated on every target."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: int = Field(ge=1, le=MAX_ID)
    source_ids: list[ModelId] = Field(
        min_length=1, max_length=MAX_TRANSFER_MODELS, description="the models the examples are crafted on"
    )
    target_ids: list[ModelId] = Field(
        min_length=1, max_length=MAX_TRANSFER_MODELS, description="the models the examples are evaluated on"
    )
    config: TransferJobConfig = Field(default_factory=TransferJobConfig)  # type: ignore[valid-type]


class TransferModelRead(BaseModel):
    id: int
    name: str
    version: str


class TransferCell(BaseModel):
    source_model_id: int
    target_model_id: int
    attack: str
    eps: float
    accuracy: float
    success_rate: float | None = Field(
        description="among the samples the target classifies correctly clean, the fraction the examples fool"
    )
    n: int
    white_box: bool = Field(description="source = target: the model's own white-box numbers")


class TransferWorstCase(BaseModel):
    target_model_id: int
    attack: str = Field(description="fgsm, pgd, or all (every attack)")
    eps: float
    accuracy: float = Field(
        description="per sample: counted only if no other source's example fooled the target"
    )
    success_rate: float | None
    n: int


class TransferRead(BaseModel):
    id: int
    dataset_id: int
    status: str
    progress: float
    attempts: int
    error: str | None
    lost_reason: str | None
    queue: str | None
    config: dict[str, Any]
    cancel_requested: bool
    worker_host: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    sources: list[TransferModelRead]
    targets: list[TransferModelRead]


class TransferResultsRead(TransferRead):
    """A transfer job and, once it succeeded, its matrix and each target's worst case over the other sources."""

    cells: list[TransferCell]
    worst_case: list[TransferWorstCase]
