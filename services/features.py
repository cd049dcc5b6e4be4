"""Features at depth: what low, mid and high layers respond to, and where an attack takes hold.

Per depth (services.feature_depths): the `feature_channels` channels of the largest dataset-mean activation
over the first `feature_samples` samples, each with its top-activating dataset patches cropped to the layer's
receptive field (services.feature_scan) and an input optimised to maximise it (services.activation_max); and
how far the depth's activations move under the FGSM attack of the CAM audit, at its ε (`depth_shift`).
Computed once per evaluation, in its finishing step: on the merging worker of a sharded job.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from services import activation_max
from services.architecture import ArchitectureAudit
from services.cam_audit import AttackedSamples
from services.checkpoints import LoadedModel
from services.datasets import Dataset
from services.errors import ConfigError
from services.feature_depths import FeatureDepth, pick_depths
from services.feature_scan import DepthScan, patch_box, scan_dataset
from services.feature_taps import LayerTap
from services.feature_types import ChannelFeatures, DepthFeatures, DepthShift, Features, Patch
from services.specs import EvaluationConfig, parse_layer_paths

PATCHES_PER_CHANNEL = 8
TORCHSCRIPT_REFUSAL = (
    "TorchScript archives do not support the hooks features at depth need: register the weights with "
    "--arch, or export the model with torch.export (.pt2)"
)


def feature_plan(
    loaded: LoadedModel, audit: ArchitectureAudit, config: EvaluationConfig, warnings: list[str]
) -> list[FeatureDepth] | None:
    """The depths to look at, or None when the section is off. Chosen layers that cannot be looked at are the
    user's to fix (ConfigError); automatic depths that cannot be found only skip the section, with a warning."""
    chosen = parse_layer_paths(config.feature_layers or "", "feature_layers")
    if config.features == "none":
        return None
    if not loaded.supports_hooks:
        if chosen:
            raise ConfigError(TORCHSCRIPT_REFUSAL)
        warnings.append(f"features at depth skipped: {TORCHSCRIPT_REFUSAL}")
        return None
    if chosen:
        return pick_depths(loaded.named_module, loaded.network, audit, audit.input_shape, chosen)
    try:
        return pick_depths(loaded.named_module, loaded.network, audit, audit.input_shape)
    except ConfigError as error:
        warnings.append(f"features at depth skipped: {error}")
        return None


def activation_shift(clean: torch.Tensor, adversarial: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per sample of two (N, C, H, W) maps: ‖a_adv − a‖ / ‖a‖ (NaN where a = 0), and the cosine of their
    channel-mean vectors (NaN where either is zero)."""
    a, b = clean.double().flatten(1), adversarial.double().flatten(1)
    norm = a.norm(dim=1)
    change = torch.where(norm > 0, (b - a).norm(dim=1) / norm.clamp_min(1e-300), math.nan)
    ma, mb = clean.double().mean(dim=(2, 3)), adversarial.double().mean(dim=(2, 3))
    denominator = ma.norm(dim=1) * mb.norm(dim=1)
    cosine = torch.where(denominator > 0, (ma * mb).sum(1) / denominator.clamp_min(1e-300), math.nan)
    return change.cpu().numpy(), cosine.cpu().numpy()


def _nanmean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else None


def depth_shift(
    model: torch.nn.Module, tap: LayerTap, samples: AttackedSamples, batch_size: int, device: torch.device
) -> list[DepthShift]:
    """Per depth of `tap`: the mean relative L2 change and channel-mean cosine from clean to adversarial."""
    changes: list[list[np.ndarray]] = [[] for _ in tap.layers]
    cosines: list[list[np.ndarray]] = [[] for _ in tap.layers]
    with torch.inference_mode():
        for start in range(0, len(samples.indices), batch_size):
            rows = slice(start, start + batch_size)
            clean = tap.run(model, torch.from_numpy(samples.images[rows]).to(device))
            adversarial = tap.run(model, torch.from_numpy(samples.adversarial_images[rows]).to(device))
            for depth, (a, b) in enumerate(zip(clean, adversarial, strict=True)):
                change, cosine = activation_shift(a, b)
                changes[depth].append(change)
                cosines[depth].append(cosine)
    return [
        DepthShift(_nanmean(np.concatenate(change)), _nanmean(np.concatenate(cosine)), len(samples.indices))
        for change, cosine in zip(changes, cosines, strict=True)
    ]


def _channels(
    scan: DepthScan, depth: FeatureDepth, picked: list[int], images: dict[int, np.ndarray]
) -> list[ChannelFeatures]:
    """The picked channels with their patches and the pixels of each patch's box."""
    _, height, width = scan.output_shape
    channels = []
    for channel in picked:
        patches, crops = [], []
        for value, sample, position in zip(
            scan.top_values[channel], scan.top_samples[channel], scan.top_positions[channel], strict=True
        ):
            y, x = divmod(int(position), width)
            image = images[int(sample)]
            box = patch_box(y, x, (height, width), (image.shape[1], image.shape[2]), depth.receptive_field)
            patches.append(Patch(int(sample), y, x, float(value), box))
            crops.append(image[:, box[0] : box[2], box[1] : box[3]])
        channels.append(
            ChannelFeatures(channel, float(scan.mean[channel]), float(scan.max_mean[channel]), patches, crops)
        )
    return channels


def compute_features(
    loaded: LoadedModel,
    dataset: Dataset,
    depths: list[FeatureDepth],
    config: EvaluationConfig,
    num_samples: int,
    samples: AttackedSamples | None,
    device: torch.device,
) -> Features:
    """The features-at-depth section (parameters frozen by the caller; the model on `device`)."""
    model, network = loaded.named_module, loaded.network
    scanned = min(config.feature_samples, num_samples)
    input_shape = tuple(dataset.info.input_shape)
    with LayerTap(network, [depth.layer for depth in depths]) as tap:
        batches = dataset.batches(config.batch_size, limit=scanned)
        scans, seen = scan_dataset(model, tap, batches, device, PATCHES_PER_CHANNEL)
        picked = [scan.most_active(config.feature_channels) for scan in scans]
        attacked = samples is not None and len(samples.indices) > 0
        shifts = depth_shift(model, tap, samples, config.batch_size, device) if attacked and samples else None
    # One optimisation per depth, its forward stopped at that depth: a low depth's images skip the deeper layers.
    maximised = []
    for depth, chosen in zip(depths, picked, strict=True):
        with LayerTap(network, [depth.layer]) as single:
            maximised.append(
                activation_max.maximise(
                    model,
                    single,
                    [(0, c) for c in chosen],
                    (input_shape[0], input_shape[1], input_shape[2]),
                    config.seed,
                    device,
                )
            )
    images = np.concatenate([found for found, _ in maximised])
    finals = np.concatenate([values for _, values in maximised])
    wanted = sorted(
        {int(s) for scan, chosen in zip(scans, picked, strict=True) for s in scan.top_samples[chosen].ravel()}
    )
    pixels = dataset.take(wanted)[0].numpy()
    by_index = dict(zip(wanted, pixels, strict=True))
    results, target = [], 0
    for d, (depth, scan) in enumerate(zip(depths, scans, strict=True)):
        found = _channels(scan, depth, picked[d], by_index)
        for channel in found:
            channel.actmax_image, channel.actmax_activation = images[target], float(finals[target])
            target += 1
        results.append(DepthFeatures(depth, scan.output_shape, found, shifts[d] if shifts else None))
    return Features(
        depths=results,
        chosen=bool(config.feature_layers),
        scanned_samples=seen,
        patches_per_channel=PATCHES_PER_CHANNEL,
        actmax=activation_max.settings(config.seed, (input_shape[1], input_shape[2])),
        attack_eps=samples.eps if attacked and samples else None,
        attack_samples=len(samples.indices) if attacked and samples else 0,
    )
