"""CAM and Grad-CAM: hooks owned by context managers, batched, normalised maps in [0, 1]."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Self

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from services.attacks import frozen_eval
from services.errors import ConfigError


def resolve_layer(network: nn.Module, path: str) -> nn.Module:
    """`network.get_submodule(path)` with a helpful error for unknown layer paths."""
    try:
        return network.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in network.named_modules() if name]
        close = difflib.get_close_matches(path, names, n=5)
        hint = (
            f" Did you mean: {', '.join(close)}?" if close else f" Layers include: {', '.join(names[:12])}…"
        )
        raise ConfigError(f"the model has no layer {path!r}.{hint}") from None


class _ActivationHook:
    """Captures one layer's output while active; the hook is always removed on exit."""

    def __init__(self, network: nn.Module, layer: str, *, track_grad: bool) -> None:
        self.module = resolve_layer(network, layer)
        self.layer = layer
        self.track_grad = track_grad
        self.activation: torch.Tensor | None = None
        self._handle: RemovableHandle | None = None

    def _hook(self, module: nn.Module, inputs: tuple[object, ...], output: object) -> torch.Tensor | None:
        if not isinstance(output, torch.Tensor):
            raise ConfigError(f"layer {self.layer!r} does not output a single tensor; pick a conv layer")
        if not self.track_grad:
            self.activation = output.detach()
            return None
        # A fresh leaf makes backward stop here; returning a clone keeps an in-place ReLU
        # downstream from overwriting the activation we differentiate against.
        self.activation = output.detach().requires_grad_(True)
        return self.activation.clone()

    def __enter__(self) -> Self:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
        self.activation = None


def _spatial(activation: torch.Tensor | None, layer: str) -> torch.Tensor:
    """The hooked activation, refused unless it is a (N, C, H, W) map with more than one position."""
    if activation is None or activation.dim() != 4:
        raise ConfigError(f"layer {layer!r} did not produce a (N, C, H, W) activation; pick a conv layer")
    if activation.shape[-1] * activation.shape[-2] < 2:
        raise ConfigError(
            f"layer {layer!r} outputs a 1×1 map at this input size: a CAM there is constant; "
            "pick an earlier layer"
        )
    return activation


def feature_map_size(
    model: nn.Module, network: nn.Module, layer: str, input_shape: Sequence[int]
) -> tuple[int, ...]:
    """Spatial size of `layer`'s output for one input of `input_shape`, from one forward pass."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    hook = _ActivationHook(network, layer, track_grad=False)
    with hook, torch.inference_mode():
        model(torch.zeros(1, *input_shape, device=device))
        activation = hook.activation
        return tuple(activation.shape[2:]) if activation is not None else ()


def _finish(raw: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """ReLU, bilinear upsample to the input size, per-image min–max to [0, 1] (flat maps → 0)."""
    if raw.dim() != 3:
        raise ConfigError("the CAM layer must output a spatial map (N, C, H, W)")
    maps = F.interpolate(raw.relu()[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    flat = maps.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    high = flat.max(dim=1).values[:, None, None]
    span = high - low
    # Upsampling a constant map leaves rounding noise; stretching that to [0, 1] would invent structure.
    flat_map = span <= 1e-5 * torch.maximum(high.abs(), low.abs()).clamp_min(1e-30)
    normalised = ((maps - low) / span.clamp_min(1e-30)).clamp(0, 1)
    return torch.where(flat_map, torch.zeros_like(maps), normalised)


class _MapExtractor:
    """Base of CAM and Grad-CAM: owns the layer hook and the frozen-eval state while entered."""

    method = ""
    track_grad = False

    def __init__(self, model: nn.Module, network: nn.Module, layer: str) -> None:
        self.model = model
        self.layer = layer
        self._hook = _ActivationHook(network, layer, track_grad=self.track_grad)
        self._frozen: AbstractContextManager[nn.Module] | None = None

    def __enter__(self) -> Self:
        # Frozen parameters: the forward builds no graph before the hooked layer, so backward stops there.
        self._frozen = frozen_eval(self.model)
        self._frozen.__enter__()
        self._hook.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._hook.__exit__(exc_type, exc, tb)
        if self._frozen is not None:
            self._frozen.__exit__(exc_type, exc, tb)

    def __call__(self, x: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps (B, H, W) in [0, 1] for `classes`, and the logits of `x`."""
        raw, logits = self._raw_maps(x, classes)
        return _finish(raw, x.shape[-2:]), logits

    def _raw_maps(self, x: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class GradCAM(_MapExtractor):
    """Grad-CAM on any conv layer: weights = spatial mean of ∂(raw logit)/∂A; map = ReLU(Σ w·A)."""

    method = "gradcam"
    track_grad = True

    def _raw_maps(self, x: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            logits: torch.Tensor = self.model(x)
            activation = _spatial(self._hook.activation, self.layer)
            score = logits.gather(1, classes[:, None]).sum()
            (grads,) = torch.autograd.grad(score, activation)
        weights = grads.mean(dim=(2, 3), keepdim=True)
        return (weights * activation.detach()).sum(dim=1), logits.detach()


class CAM(_MapExtractor):
    """Class activation mapping for GAP → Linear heads: forward only, weights = the Linear's rows."""

    method = "cam"

    def __init__(self, model: nn.Module, network: nn.Module, feature_layer: str, classifier: str) -> None:
        super().__init__(model, network, feature_layer)
        # An unflattened torch.export module is not an nn.Linear but still owns the 2-D weight.
        weight = getattr(resolve_layer(network, classifier), "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise ConfigError(f"CAM needs a Linear classifier; {classifier!r} has no 2-D weight")
        self.weight = weight

    def _raw_maps(self, x: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            logits: torch.Tensor = self.model(x)
            activation = _spatial(self._hook.activation, self.layer)
            return torch.einsum("bk,bkhw->bhw", self.weight[classes].to(activation.dtype), activation), logits


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image Pearson correlation of two map batches; NaN where either map is constant."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(
        denom > 0, (a * b).sum(1) / denom.clamp_min(1e-300), torch.full_like(denom, math.nan)
    ).float()


def top_region(maps: torch.Tensor, fraction: float = 0.2) -> torch.Tensor:
    """Boolean masks of each map's top `fraction`: pixels ≥ the ⌈fraction·H·W⌉-th largest value and > 0.

    Ties are all kept (no arbitrary tie-break), and zero pixels never count as attended.
    """
    flat = maps.flatten(1)
    count = max(1, math.ceil(fraction * flat.shape[1]))
    threshold = flat.topk(count, dim=1).values[:, -1:]
    return ((flat >= threshold) & (flat > 0)).view_as(maps)


def top_region_iou(a: torch.Tensor, b: torch.Tensor, fraction: float = 0.2) -> torch.Tensor:
    """Per-image IoU of the two maps' top-`fraction` regions; NaN when both regions are empty."""
    ma, mb = top_region(a, fraction).flatten(1), top_region(b, fraction).flatten(1)
    union = (ma | mb).sum(1).float()
    return torch.where(
        union > 0, (ma & mb).sum(1).float() / union.clamp_min(1), torch.full_like(union, math.nan)
    )


def confidence_drop(
    model: nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor, fraction: float = 0.2
) -> torch.Tensor:
    """Faithfulness: p(class | x) − p(class | x with only the map's top region kept, the rest zeroed)."""
    keep = top_region(maps, fraction)[:, None].to(x.dtype)
    with torch.inference_mode():
        full: torch.Tensor = model(x).float().softmax(1).gather(1, classes[:, None]).squeeze(1)
        kept: torch.Tensor = model(x * keep).float().softmax(1).gather(1, classes[:, None]).squeeze(1)
    return full - kept
