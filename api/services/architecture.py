"""A model's architecture audit and first-layer filter grid: made when it is registered, kept per sha256.

The audit document is report.json's "architecture" section. The grid PNG lives in the artifact store;
the stored document names it under FILTER_GRID, which the API strips before answering.
"""

from __future__ import annotations

import tempfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from api.errors import Conflict, NotFound
from api.services.storage import local_copy, upload_dir
from api.services.validation import run_isolated
from contracts.settings import Settings
from db import repositories as repo
from db.models import ArchitectureAuditRecord, ModelRecord
from db.storage import ArtifactStore
from services.errors import CheckpointError
from services.files import sha256_file

FILTER_GRID = "filter_grid"
GRID_FILE = "filters.png"


def load_options(model: ModelRecord, path: Path) -> dict[str, Any]:
    """The loader arguments the model was validated with."""
    return {
        "path": str(path),
        "input_shape": list(model.input_shape),
        "arch": model.arch,
        "num_classes": model.num_classes if model.arch else None,
        "mean": model.mean,
        "std": model.std,
    }


def model_file(store: ArtifactStore, model: ModelRecord) -> AbstractContextManager[Path]:
    """A local file of the model's checkpoint for the block (409 when the store lost it)."""
    missing = Conflict(f"the file of model {model.name} {model.version} is missing from the artifact store")
    return local_copy(store, model.storage_key, missing)


def keep(
    session: Session,
    store: ArtifactStore,
    *,
    sha256: str,
    input_shape: list[int],
    result: dict[str, Any],
    grid_path: Path,
) -> list[str]:
    """Store the audit (and the grid the child drew) for this sha256; the store keys this call added."""
    added: list[str] = []
    document = dict(result["audit"])
    if result.get("filter_grid") and grid_path.is_file():
        existed = store.exists(sha256_file(grid_path))
        key, _, _ = store.put_file(grid_path)
        if not existed:
            added.append(key)
        document[FILTER_GRID] = key
    record = repo.results.store_architecture_audit(
        session=session, model_sha256=sha256, input_shape=input_shape, document=document
    )
    if record.document != document and FILTER_GRID not in record.document:
        record.document = document  # an audit cached for a CAM-layer check, before the grid was kept
        session.flush()
    return added


def _record(
    session: Session, store: ArtifactStore, settings: Settings, model: ModelRecord
) -> ArchitectureAuditRecord:
    """The cached audit with its grid, computed now (in the validation sandbox) for an older model."""
    record = repo.results.get_architecture_audit(
        session=session, model_sha256=model.sha256, input_shape=model.input_shape
    )
    if record is not None and (FILTER_GRID in record.document or not record.document.get("layers")):
        return record
    root = upload_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    with (
        model_file(store, model) as path,
        tempfile.TemporaryDirectory(dir=root, prefix="architecture-") as tmp,
    ):
        grid = Path(tmp) / GRID_FILE
        result = run_isolated(
            "architecture",
            {**load_options(model, path), "filter_grid_path": str(grid)},
            what=f"model {model.name} {model.version}",
            error=CheckpointError,
        )
        keep(
            session,
            store,
            sha256=model.sha256,
            input_shape=list(model.input_shape),
            result=result,
            grid_path=grid,
        )
    session.commit()
    return repo.results.get_architecture_audit(
        session=session, model_sha256=model.sha256, input_shape=model.input_shape
    )


def architecture(
    *, session: Session, store: ArtifactStore, settings: Settings, model: ModelRecord
) -> dict[str, Any]:
    """The model's architecture audit document (report.json's "architecture" section)."""
    document = _record(session, store, settings, model).document
    return {name: value for name, value in document.items() if name != FILTER_GRID}


def filter_grid(*, session: Session, store: ArtifactStore, settings: Settings, model: ModelRecord) -> Path:
    """The PNG grid of the model's first conv layer's filters (404 for a model without conv layers)."""
    key = _record(session, store, settings, model).document.get(FILTER_GRID)
    if not key:
        raise NotFound(f"model {model.name} {model.version} has no conv layer, so no filter grid")
    missing = NotFound(f"the filter grid of model {model.name} {model.version} is missing from the store")
    with local_copy(store, key, missing) as path:
        return path
