"""An audit's transfer sources: registered models that take the dataset's images and predict its classes."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.errors import Unprocessable
from db import repositories as repo
from db.models import DatasetRecord, ModelRecord
from services.errors import ConfigError
from services.transfer_specs import MAX_TRANSFER_MODELS, ModelShape, check_compatible


def _label(model: ModelRecord) -> str:
    return f"{model.name} {model.version}"


def checked_sources(
    session: Session, source_ids: list[int] | None, candidates: list[ModelRecord], dataset: DatasetRecord
) -> list[int] | None:
    """The sources, repeats dropped (None for none); 422 for an unknown source, one that is also a candidate,
    too many candidates for one transfer job, or a model the transfer engine's compatibility check refuses."""
    ids = list(dict.fromkeys(source_ids or []))
    if not ids:
        return None
    sources = []
    for model_id in ids:
        model = repo.models.get(session=session, model_id=model_id)
        if model is None:
            raise Unprocessable(f"transfer_source_ids: model {model_id} does not exist")
        sources.append(model)
    overlap = sorted({m.id for m in sources} & {m.id for m in candidates})
    if overlap:
        raise Unprocessable(
            f"transfer_source_ids: model(s) {', '.join(map(str, overlap))} are also audited; a source must be "
            "another model (its own examples are the white-box case, already measured)"
        )
    if len(candidates) > MAX_TRANSFER_MODELS:
        raise Unprocessable(
            f"transfer_source_ids: a transfer job takes at most {MAX_TRANSFER_MODELS} targets, and this audit "
            f"selects {len(candidates)} models"
        )
    shapes = [ModelShape(_label(m), tuple(m.input_shape), m.num_classes) for m in [*sources, *candidates]]
    try:
        check_compatible(shapes, dataset.name, tuple(dataset.input_shape), dataset.num_classes)
    except ConfigError as error:
        raise Unprocessable(f"transfer_source_ids: {error}") from None
    return ids
