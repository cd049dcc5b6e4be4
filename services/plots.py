"""PNG figures of a report: accuracy–ε curve, CAM gallery, triptychs."""

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

if TYPE_CHECKING:
    from services.report import CamAudit, Triptych

ClassName = Callable[[int], str]


def _image(chw: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C, H, W) in [0, 1] → something imshow draws: grey for 1 channel, RGB for 3."""
    if chw.shape[0] == 1:
        return chw[0], "gray"
    return np.clip(np.transpose(chw[:3], (1, 2, 0)), 0, 1), None


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
    picture, _ = _image(chw)
    base = np.repeat(picture[..., None], 3, axis=2) if picture.ndim == 2 else picture
    colours = matplotlib.colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    blended: np.ndarray = np.clip((1 - alpha) * base + alpha * colours, 0, 1)
    return blended


def cam_gallery(cam: CamAudit, class_name: ClassName, path: Path, columns: int = 4) -> None:
    """Clean and adversarial overlays side by side, per image, with their similarity."""
    count = len(cam.indices)
    rows = (count + columns - 1) // columns
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2.1 * 2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(count):
        r, c = divmod(i, columns)
        clean_ax, adv_ax = axes[r, 2 * c], axes[r, 2 * c + 1]
        clean_ax.imshow(overlay(cam.images[i], cam.clean[i]), interpolation="nearest")
        adv_ax.imshow(overlay(cam.adversarial_images[i], cam.adversarial[i]), interpolation="nearest")
        clean_ax.set_title(
            f"#{cam.indices[i]} label {class_name(int(cam.labels[i]))}\n"
            f"clean: {class_name(int(cam.clean_class[i]))} {100 * cam.clean_confidence[i]:.0f}%",
            fontsize=7,
        )
        adv_ax.set_title(
            f"adv: {class_name(int(cam.adversarial_class[i]))} "
            f"{100 * cam.adversarial_confidence[i]:.0f}%\n"
            f"r={cam.similarity[i]:.2f} IoU={cam.top20_iou[i]:.2f}",
            fontsize=7,
        )
    method = {"cam": "CAM", "gradcam": "Grad-CAM"}.get(cam.method, cam.method)
    fig.suptitle(
        f"{method} on {cam.layer}: clean vs adversarial at ε = {cam.eps:.4f} ({cam.eps * 255:.1f}/255)",
        fontsize=10,
    )
    _save(fig, path)


def triptych(t: Triptych, class_name: ClassName, path: Path) -> None:
    """clean (class, confidence) + ε·sign(∇) = adversarial (class, confidence)."""
    fig, axes = plt.subplots(1, 3, figsize=(8.4, 3.2))
    clean, cmap = _image(t.clean)
    axes[0].imshow(clean, cmap=cmap, vmin=0, vmax=1)
    axes[0].set_title(
        f"clean: {class_name(t.clean_class)}\n{100 * t.clean_confidence:.1f} % confidence", fontsize=9
    )
    noise, ncmap = _image(0.5 + 0.5 * t.perturbation)
    axes[1].imshow(noise, cmap=ncmap, vmin=0, vmax=1)
    axes[1].set_title(f"ε · sign(∇x loss)\nε = {t.eps:.4f} ({t.eps * 255:.1f}/255)", fontsize=9)
    adversarial, acmap = _image(t.adversarial)
    axes[2].imshow(adversarial, cmap=acmap, vmin=0, vmax=1)
    axes[2].set_title(
        f"adversarial: {class_name(t.adversarial_class)}\n{100 * t.adversarial_confidence:.1f} % confidence",
        fontsize=9,
    )
    for ax in axes:
        ax.axis("off")
    fig.text(0.355, 0.45, "+", fontsize=22, ha="center")
    fig.text(0.64, 0.45, "=", fontsize=22, ha="center")
    fig.suptitle(f"sample {t.index}, true label {class_name(t.label)}", fontsize=9, y=0.08)
    _save(fig, path)
