"""PNG figures of a report: accuracy–ε curve (matplotlib), CAM gallery and triptychs (services.picture_sheets)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from numpy.typing import ArrayLike  # noqa: E402

from services import picture_sheets  # noqa: E402

if TYPE_CHECKING:
    from services.report import CamAudit, Triptych

ClassName = Callable[[int], str]


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _times_255(eps: ArrayLike) -> ArrayLike:
    return np.asanyarray(eps) * 255


def _over_255(value: ArrayLike) -> ArrayLike:
    return np.asanyarray(value) / 255


def accuracy_curve(document: dict[str, Any], path: Path) -> None:
    """Accuracy and success rates against ε (absolute, and ×255 on the top axis)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    points = sorted(document["fgsm"], key=lambda p: p["eps"])
    eps = [p["eps"] for p in points]
    ax.plot(eps, [p["accuracy"] for p in points], "o-", label="accuracy under FGSM")
    ax.plot(eps, [p["attack_success_rate"] for p in points], "s--", alpha=0.7, label="FGSM attack success")
    targeted = document.get("targeted_fgsm")
    if targeted:
        t_points = sorted(targeted["points"], key=lambda p: p["eps"])
        t_eps = [p["eps"] for p in t_points]
        policy = targeted["policy"]
        ax.plot(
            t_eps, [p["accuracy"] for p in t_points], "^-", label=f"accuracy under targeted FGSM ({policy})"
        )
        ax.plot(t_eps, [p["target_success_rate"] for p in t_points], "v--", alpha=0.7, label="target success")
    ax.set_xlabel("ε (input range [0, 1])")
    ax.set_ylabel("rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    top = ax.secondary_xaxis("top", functions=(_times_255, _over_255))
    top.set_xlabel("ε × 255")
    name = document["model"]["source"]
    ax.set_title(
        f"{name} on {document['dataset']['source']} (AUC {document['summary']['robust_auc']:.3f})",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="best")
    _save(fig, path)


def overlay(chw: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An RGB image (H, W, 3) in [0, 1]: the input in grey or colour, blended with a jet heat map."""
    picture = picture_sheets.as_picture(chw)
    base = np.repeat(picture[..., None], 3, axis=2) if picture.ndim == 2 else picture
    colours = matplotlib.colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    blended: np.ndarray = np.clip((1 - alpha) * base + alpha * colours, 0, 1)
    return blended


def cam_gallery(cam: CamAudit, class_name: ClassName, path: Path, columns: int = 4) -> None:
    """Clean and adversarial overlays side by side, per image, with their similarity."""
    picture_sheets.cam_gallery(cam, class_name, path, overlay, columns)


def triptych(t: Triptych, class_name: ClassName, path: Path) -> None:
    """clean (class, confidence) + ε·sign(∇) = adversarial (class, confidence)."""
    picture_sheets.triptych(t, class_name, path)
