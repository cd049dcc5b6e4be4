"""The features-at-depth results: per depth its channels, their top dataset patches and activation maximisation,
and how far the depth's activations move under attack; their report.json form and their arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from services.feature_depths import FeatureDepth

Box = tuple[int, int, int, int]  # (top, left, bottom, right) in input pixels, bottom and right exclusive


@dataclass(frozen=True)
class Patch:
    """One of a channel's top-activating positions: the sample, the unit of the map and its input box."""

    sample: int  # dataset index
    y: int  # the unit's row and column in the layer's map
    x: int
    activation: float
    box: Box

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample": self.sample,
            "y": self.y,
            "x": self.x,
            "activation": self.activation,
            "box": list(self.box),
        }


@dataclass
class ChannelFeatures:
    """One of a depth's most active channels."""

    channel: int
    dataset_mean: float  # over the scanned samples, of the channel's spatial-mean activation
    dataset_max_mean: float  # the largest spatial-mean activation of any scanned sample
    patches: list[Patch]
    crops: list[np.ndarray]  # (C, h, w) pixels of each patch's box
    actmax_image: np.ndarray | None = None  # (C, H, W) in [0, 1]: the input optimised for this channel
    actmax_activation: float | None = None  # the channel's spatial-mean activation on it

    def to_dict(self) -> dict[str, Any]:
        ratio = (
            self.actmax_activation / self.dataset_mean
            if self.actmax_activation is not None and self.dataset_mean > 0
            else None
        )
        return {
            "channel": self.channel,
            "dataset_mean": self.dataset_mean,
            "dataset_max_mean": self.dataset_max_mean,
            "actmax_activation": self.actmax_activation,
            "actmax_ratio": ratio,
            "patches": [patch.to_dict() for patch in self.patches],
        }


@dataclass(frozen=True)
class DepthShift:
    """How far one depth's activations move from clean to adversarial inputs (means over the samples)."""

    relative_l2_change: float | None  # ‖a_adv − a‖ / ‖a‖ per sample (samples with a = 0 left out)
    channel_cosine: float | None  # cosine of the clean and adversarial channel-mean vectors per sample
    num_samples: int


@dataclass
class DepthFeatures:
    depth: FeatureDepth
    output_shape: tuple[int, int, int]  # (C, H, W) of the layer's map
    channels: list[ChannelFeatures]
    shift: DepthShift | None = None

    def to_dict(self) -> dict[str, Any]:
        shift = self.shift
        return {
            "role": self.depth.role,
            "layer": self.depth.layer,
            "conv": self.depth.conv,
            "receptive_field": list(self.depth.receptive_field),
            "output_shape": list(self.output_shape),
            "under_attack": None
            if shift is None
            else {"relative_l2_change": shift.relative_l2_change, "channel_cosine": shift.channel_cosine},
            "channels": [channel.to_dict() for channel in self.channels],
        }


@dataclass
class Features:
    """The section as a whole: its depths and how it was computed."""

    depths: list[DepthFeatures]
    chosen: bool  # the user named the layers (feature_layers), else low/mid/high were picked
    scanned_samples: int
    patches_per_channel: int
    actmax: dict[str, Any]  # the optimisation's settings (steps, step size, jitter, blur, seed)
    attack_eps: float | None = None  # the CAM ε of the depth-under-attack numbers
    attack_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": "chosen" if self.chosen else "auto",
            "scanned_samples": self.scanned_samples,
            "patches_per_channel": self.patches_per_channel,
            "activation_maximisation": self.actmax,
            "attack": None
            if self.attack_eps is None
            else {"method": "fgsm", "eps": self.attack_eps, "num_samples": self.attack_samples},
            "depths": [depth.to_dict() for depth in self.depths],
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """features.npz: per depth the channels, their act-max images and patch boxes (sample, top, left, …)."""
        arrays: dict[str, np.ndarray] = {}
        for i, depth in enumerate(self.depths):
            arrays[f"depth{i}_channels"] = np.array([c.channel for c in depth.channels], dtype=np.int64)
            images = [c.actmax_image for c in depth.channels if c.actmax_image is not None]
            if images:
                arrays[f"depth{i}_actmax"] = np.stack(images).astype(np.float32)
            arrays[f"depth{i}_patches"] = np.array(
                [[[p.sample, *p.box] for p in c.patches] for c in depth.channels], dtype=np.int64
            ).reshape(len(depth.channels), -1, 5)
        return arrays
