"""One CAM of a job's gallery as a PNG: the map over its input image, or the bare heat map without one."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from api.errors import NotFound
from api.services.storage import local_copy
from db import repositories as repo
from db.models import Job
from db.storage import ArtifactStore

VIEWS = ("clean", "adversarial")
# gradcam.npz keys of the input images each map belongs to (when the report stored them).
IMAGE_KEYS = {"clean": "images", "adversarial": "adversarial_images"}
CAM_ARCHIVE = "gradcam.npz"


def cam_png(*, session: Session, store: ArtifactStore, job: Job, position: int, view: str) -> bytes:
    """The `view` map of the gallery's `position`-th sample (404 for an unknown view, sample or audit)."""
    if view not in VIEWS:
        raise NotFound(f"unknown CAM view {view!r}; use clean or adversarial")
    artifact = repo.results.get_artifact(session=session, job_id=job.id, name=CAM_ARCHIVE)
    if artifact is None:
        raise NotFound(f"job {job.id} has no CAM audit (it ran with cam none, or on a TorchScript model)")
    missing = NotFound(f"the CAM maps of job {job.id} are missing from the artifact store")
    with local_copy(store, artifact.storage_key, missing) as path:
        count = _sample_count(path)
        if not 0 <= position < count:
            raise NotFound(
                f"job {job.id}'s CAM gallery has {count} samples (0…{count - 1}); there is no sample {position}"
            )
        return _render(path, position, view)


@functools.lru_cache(maxsize=64)
def _sample_count(path: Path) -> int:
    with np.load(path, allow_pickle=False) as archive:
        return int(archive["clean"].shape[0])


# Stored files are content-addressed and never rewritten, so a path's rendering never goes stale.
@functools.lru_cache(maxsize=512)
def _render(path: Path, position: int, view: str) -> bytes:
    from PIL import Image

    with np.load(path, allow_pickle=False) as archive:
        heat = np.asarray(archive[view][position], dtype=np.float32)
        key = IMAGE_KEYS[view]
        image = np.asarray(archive[key][position], dtype=np.float32) if key in archive.files else None
    rgb = _overlay(image, heat) if image is not None else _heat_map(heat)
    buffer = io.BytesIO()
    Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _heat_map(heat: np.ndarray) -> np.ndarray:
    import matplotlib

    return matplotlib.colormaps["jet"](np.clip(heat, 0, 1))[..., :3]


def _overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    from services.plots import overlay

    return overlay(image, heat)


def overlays_available(*, session: Session, store: ArtifactStore, job: Job) -> bool:
    """Whether the job's gradcam.npz holds the input images, so its maps can be drawn over them."""
    artifact = repo.results.get_artifact(session=session, job_id=job.id, name=CAM_ARCHIVE)
    if artifact is None:
        return False
    try:
        with store.local_path(artifact.storage_key) as path:
            return _stores_images(path)
    except FileNotFoundError:  # the maps are gone from the store: the page says so where it shows them
        return False


@functools.lru_cache(maxsize=64)
def _stores_images(path: Path) -> bool:
    with np.load(path, allow_pickle=False) as archive:
        return all(key in archive.files for key in IMAGE_KEYS.values())
