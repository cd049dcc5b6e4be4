"""The CAM audit and triptychs on a sample of images, attacked at one ε (`--cam-eps`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from services.attacks import perturb
from services.cams import CAM, GradCAM, confidence_drop, pearson, top_region_iou
from services.report import CamAudit, Triptych
from services.sweep import SweepResult


@dataclass
class AttackedSamples:
    """A few dataset samples with their FGSM direction, attacked at `eps` (CPU arrays)."""

    eps: float
    indices: np.ndarray
    labels: np.ndarray
    images: np.ndarray  # (M, C, H, W)
    directions: np.ndarray
    adversarial_images: np.ndarray
    clean_class: np.ndarray
    clean_confidence: np.ndarray
    adversarial_class: np.ndarray
    adversarial_confidence: np.ndarray


def _chunks(count: int, size: int) -> Iterator[slice]:
    return (slice(i, min(i + size, count)) for i in range(0, count, size))


def attacked_samples(
    model: nn.Module, sweep: SweepResult, eps: float, device: torch.device | str, batch_size: int
) -> AttackedSamples:
    """The sweep's kept samples, perturbed at `eps` and classified, in batches of `batch_size`."""
    selected = sweep.selected
    if selected is None:
        raise ValueError("the sweep kept no samples: run it with samples selected")
    indices = sorted(selected)
    x = torch.stack([selected[i][0] for i in indices])
    direction = torch.stack([selected[i][1] for i in indices])
    adv = perturb(x, direction, eps)
    confidences: list[torch.Tensor] = []
    classes: list[torch.Tensor] = []
    with torch.inference_mode():
        for rows in _chunks(len(indices), batch_size):
            probs = model(adv[rows].to(device)).float().softmax(1)
            conf, cls = probs.max(1)
            confidences.append(conf.cpu())
            classes.append(cls.cpu())
    return AttackedSamples(
        eps=eps,
        indices=np.array(indices),
        labels=sweep.labels[indices].numpy(),
        images=x.numpy(),
        directions=direction.numpy(),
        adversarial_images=adv.numpy(),
        clean_class=sweep.clean_pred[indices].numpy(),
        clean_confidence=sweep.clean_conf[indices].numpy(),
        adversarial_class=torch.cat(classes).numpy(),
        adversarial_confidence=torch.cat(confidences).numpy(),
    )


def cam_audit(
    extractor: CAM | GradCAM,
    model: nn.Module,
    samples: AttackedSamples,
    keep: np.ndarray,
    device: torch.device | str,
    batch_size: int,
) -> CamAudit:
    """Clean maps for the clean prediction, adversarial maps for the adversarial one, and drift metrics."""
    rows = np.flatnonzero(keep)
    pieces: dict[str, list[torch.Tensor]] = {name: [] for name in ("clean", "adversarial", "drop")}
    with extractor:
        for chunk in _chunks(len(rows), batch_size):
            picked = rows[chunk]
            x = torch.from_numpy(samples.images[picked]).to(device)
            adv = torch.from_numpy(samples.adversarial_images[picked]).to(device)
            clean_class = torch.from_numpy(samples.clean_class[picked]).to(device)
            adv_class = torch.from_numpy(samples.adversarial_class[picked]).to(device)
            clean_maps, _ = extractor(x, clean_class)
            adv_maps, _ = extractor(adv, adv_class)
            pieces["clean"].append(clean_maps.cpu())
            pieces["adversarial"].append(adv_maps.cpu())
            pieces["drop"].append(confidence_drop(model, x, clean_maps, clean_class).cpu())
    clean, adversarial = torch.cat(pieces["clean"]), torch.cat(pieces["adversarial"])
    return CamAudit(
        method=extractor.method,
        layer=extractor.layer,
        eps=samples.eps,
        indices=samples.indices[rows],
        labels=samples.labels[rows],
        clean=clean.numpy(),
        adversarial=adversarial.numpy(),
        clean_class=samples.clean_class[rows],
        adversarial_class=samples.adversarial_class[rows],
        clean_confidence=samples.clean_confidence[rows],
        adversarial_confidence=samples.adversarial_confidence[rows],
        similarity=pearson(clean, adversarial).numpy(),
        top20_iou=top_region_iou(clean, adversarial).numpy(),
        confidence_drop=torch.cat(pieces["drop"]).numpy(),
        images=samples.images[rows],
        adversarial_images=samples.adversarial_images[rows],
    )


def triptychs(samples: AttackedSamples, count: int) -> list[Triptych]:
    """Prefer samples the attack flipped from a correct prediction: the picture the report is for."""
    flipped = (samples.clean_class == samples.labels) & (samples.adversarial_class != samples.clean_class)
    order = sorted(range(len(samples.indices)), key=lambda i: (not flipped[i], i))[:count]
    return [
        Triptych(
            index=int(samples.indices[i]),
            label=int(samples.labels[i]),
            eps=samples.eps,
            clean=samples.images[i],
            perturbation=samples.directions[i],
            adversarial=samples.adversarial_images[i],
            clean_class=int(samples.clean_class[i]),
            clean_confidence=float(samples.clean_confidence[i]),
            adversarial_class=int(samples.adversarial_class[i]),
            adversarial_confidence=float(samples.adversarial_confidence[i]),
        )
        for i in order
    ]
