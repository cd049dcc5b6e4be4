"""Which layers the features-at-depth section looks at: low, mid and high conv stages, or the user's layers.

Automatic depths come from the architecture audit's convolutions (execution order; named, 2-d, with a spatial
output). Consecutive convolutions with the same output resolution form a stage; low, mid and high are picks
from the first, middle and last stage (with fewer than three stages: the first, middle and last convolution).

The tensor looked at is the activation *after* a convolution. One recorded forward (hooks on every module,
a mid-gray image) follows the conv's output object: through the batch norms and activations that consume it
(in-place ones return the same object), then up to the outermost enclosing module that returns that very
object (a residual block, a stage, a `features` Sequential). The outermost of those that runs once per
forward is the layer; a stage's pick is its last conv that lifts to an enclosing module, else its last conv
that lifts at all, else its last conv. A torch.export view holds no nn.BatchNorm2d or nn.ReLU to follow, so
there the layer is the conv or an enclosing module.

Chosen layers (`feature_layers`) are module paths resolved with get_submodule, refused unless they run once
and output an (N, C, H, W) map. A layer's receptive field is the largest among the convolutions that finished
at or before it in the recorded forward (the audit computes them; for a sequential chain it is the last one's).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from services.architecture import ArchitectureAudit, ConvLayer
from services.cams import resolve_layer
from services.errors import ConfigError

ROLES = ("low", "mid", "high")
Pair = tuple[int, int]


@dataclass(frozen=True)
class FeatureDepth:
    """One depth: the module whose output is looked at, the conv it follows and its receptive field."""

    role: str  # low, mid, high, or "layer 1", "layer 2", … for chosen layers
    layer: str
    conv: str  # the last convolution at or before the layer ("" when none ran before it)
    receptive_field: Pair  # (h, w) input pixels seen by one unit of the layer's map


@dataclass
class _Call:
    name: str
    module: nn.Module
    inputs: tuple[object, ...]
    output: object


def _record(model: nn.Module, network: nn.Module, input_shape: Sequence[int]) -> list[_Call]:
    """Every module call of one forward on a mid-gray image, in the order the calls finish.

    The calls keep their tensors alive, so object identity between one call's output and another's input holds.
    """
    calls: list[_Call] = []

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(module: nn.Module, inputs: tuple[object, ...], output: object) -> None:
            calls.append(_Call(name, module, inputs, output))

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in network.named_modules()]
    reference = next((p for p in network.parameters()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    try:
        with torch.inference_mode():
            model(torch.full((1, *input_shape), 0.5, dtype=dtype, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _passes_through(module: nn.Module) -> bool:
    """Batch norm, activation, dropout or identity: modules that keep a conv's map a map of the same units."""
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.Identity, nn.Dropout)) or (
        type(module).__module__ == "torch.nn.modules.activation"
    )


def _encloses(outer: str, inner: str) -> bool:
    return outer == "" or inner.startswith(outer + ".")


def _lift(calls: list[_Call], conv_position: int, once: Counter[str]) -> tuple[str, int]:
    """The layer to look at for the conv call at `conv_position`, and how it was lifted: 2 to an enclosing
    module, 1 past batch norms or activations, 0 not at all (the conv itself)."""
    conv = calls[conv_position]
    current, chain = conv.output, [(conv.name, 0)]
    for call in calls[conv_position + 1 :]:
        consumes = any(item is current for item in call.inputs)
        leaf_pass = _passes_through(call.module) and not list(call.module.children())
        if call.output is current and call.name and _encloses(call.name, conv.name):
            chain.append((call.name, 2))  # a block or stage that returns the map itself
        elif consumes and leaf_pass:
            current = call.output  # a batch norm, or an activation (in place or not)
            chain.append((call.name, 1))
        elif consumes or _encloses(call.name, conv.name):
            break  # the map is transformed (pooled, convolved), or an enclosing module returned another tensor
        # else: a side branch (a shortcut's downsampling) that does not touch the map
    usable = [(name, how) for name, how in chain if name and once[name] == 1]
    return usable[-1] if usable else (conv.name, 0)


def _field(audit: ArchitectureAudit, calls: list[_Call], position: int, image_hw: Pair) -> tuple[str, Pair]:
    """The last conv finished at or before call `position`, and the largest receptive field among those convs."""
    by_name: dict[str, list[ConvLayer]] = {}
    for layer in audit.layers:
        by_name.setdefault(layer.name, []).append(layer)
    seen: Counter[str] = Counter()
    last, field = "", (1, 1)
    for call in calls[: position + 1]:
        if call.name and call.name in by_name and seen[call.name] < len(by_name[call.name]):
            layer = by_name[call.name][seen[call.name]]
            seen[call.name] += 1
            if layer.spatial_dims == 2:
                last = layer.name
                field = (max(field[0], layer.receptive_field[0]), max(field[1], layer.receptive_field[1]))
    if not audit.layers:  # no inventory: a unit may see the whole image
        field = image_hw
    return last, field  # may exceed the image (a patch's box is clipped to it)


def _position(calls: list[_Call], name: str) -> int:
    return next(i for i, call in enumerate(calls) if call.name == name)


def _stage_picks(audit: ArchitectureAudit, calls: list[_Call], once: Counter[str]) -> list[str]:
    """Low, mid and high layers (possibly fewer when picks coincide)."""
    recorded = {call.name for call in calls}
    convs = [
        layer
        for layer in audit.layers
        if layer.spatial_dims == 2 and layer.name and layer.name in recorded and once[layer.name] == 1
    ]
    spatial = [layer for layer in convs if layer.output_shape[1] * layer.output_shape[2] > 1] or convs
    if not spatial:
        raise ConfigError(
            "the model has no named 2-d convolution that runs once per forward to look at; "
            "name the layers with feature_layers"
        )
    stages: list[list[ConvLayer]] = []
    for layer in spatial:
        if stages and stages[-1][-1].output_shape[1:] == layer.output_shape[1:]:
            stages[-1].append(layer)
        else:
            stages.append([layer])
    if len(stages) < 3:
        stages = [[layer] for layer in spatial]
    picks = []
    for stage in (stages[0], stages[len(stages) // 2], stages[-1]):
        lifted = [_lift(calls, _position(calls, layer.name), once) for layer in stage]
        best = max(range(len(lifted)), key=lambda i: (lifted[i][1], i))
        picks.append(lifted[best][0])
    return picks


def pick_depths(
    model: nn.Module,
    network: nn.Module,
    audit: ArchitectureAudit,
    input_shape: tuple[int, int, int],
    chosen: Sequence[str] = (),
) -> list[FeatureDepth]:
    """The depths to look at: low, mid and high automatically, or the `chosen` module paths in order."""
    for layer in chosen:
        resolve_layer(network, layer)  # unknown paths: a ConfigError naming close matches
    calls = _record(model, network, input_shape)
    once = Counter(call.name for call in calls)
    image_hw = (input_shape[1], input_shape[2])
    if chosen:
        for layer in chosen:
            if once[layer] != 1:
                raise ConfigError(
                    f"layer {layer!r} runs {once[layer]} times per forward; pick a module that runs once"
                )
            output = calls[_position(calls, layer)].output
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                raise ConfigError(f"layer {layer!r} does not output an (N, C, H, W) map; pick a conv stage")
        names, roles = list(chosen), [f"layer {i + 1}" for i in range(len(chosen))]
    else:
        picks = _stage_picks(audit, calls, once)
        names, roles = [], []
        for role, name in zip(ROLES, picks, strict=True):
            if name not in names:
                names.append(name)
                roles.append(role)
    depths = []
    for role, name in zip(roles, names, strict=True):
        conv, field = _field(audit, calls, _position(calls, name), image_hw)
        depths.append(FeatureDepth(role, name, conv, field))
    return depths
