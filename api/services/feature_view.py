"""The features-at-depth part of a report as the job and model pages show it (reports before v3 have none)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db import repositories as repo
from db.models import Job, ModelRecord
from services.job_states import SUCCEEDED

SHIFT_PLOT = "features_under_attack.png"
SEARCHED_JOBS = 25  # the model page looks for a gallery among the model's newest succeeded jobs


def depth_image(position: int) -> str:
    return f"features_depth_{position}.png"


def feature_view(document: dict[str, Any], artifact_names: list[str]) -> dict[str, Any] | None:
    """Depth rows (layer, field, pictures, numbers under attack) and the plot; None without a features section."""
    features = document.get("features")
    if not isinstance(features, dict) or not features.get("depths"):
        return None
    names = set(artifact_names)
    depths = []
    for position, depth in enumerate(features["depths"]):
        shift = depth.get("under_attack") or {}
        channels = depth.get("channels") or []
        ratios = sorted(c["actmax_ratio"] for c in channels if c.get("actmax_ratio") is not None)
        depths.append(
            {
                "role": depth.get("role"),
                "layer": depth.get("layer"),
                "conv": depth.get("conv"),
                "receptive_field": depth.get("receptive_field"),
                "output_shape": depth.get("output_shape"),
                "image": depth_image(position) if depth_image(position) in names else None,
                "channels": [c.get("channel") for c in channels],
                "relative_l2_change": shift.get("relative_l2_change"),
                "channel_cosine": shift.get("channel_cosine"),
                "median_actmax_ratio": ratios[len(ratios) // 2] if ratios else None,
            }
        )
    return {
        "depths": depths,
        "chosen": features.get("layers") == "chosen",
        "scanned_samples": features.get("scanned_samples"),
        "patches_per_channel": features.get("patches_per_channel"),
        "attack": features.get("attack"),
        "plot": SHIFT_PLOT if SHIFT_PLOT in names else None,
        "cam_drift": (document.get("gradcam") or {}).get("drift"),
    }


def latest_gallery(*, session: Session, model: ModelRecord) -> tuple[Job, dict[str, Any]] | None:
    """The newest succeeded job of the model whose report has a feature gallery, and that gallery's view."""
    for job in repo.jobs.list(session=session, model_id=model.id, status=SUCCEEDED, limit=SEARCHED_JOBS):
        document = job.report or {}
        if not (document.get("features") or {}).get("depths"):
            continue
        names = [artifact.name for artifact in repo.results.list_artifacts(session=session, job_id=job.id)]
        view = feature_view(document, names)
        if view is not None and any(depth["image"] for depth in view["depths"]):
            return job, view
    return None
