"""Architecture audit: every convolution's kind, shape, cost and receptive field, plus the CAM head, if any.

Kinds, by precedence (the first that applies wins): transposed > depthwise > grouped > dilated > pointwise >
standard. A dilated depthwise conv is therefore "depthwise", but its dilation is still reported.

How the inventory is obtained (`ArchitectureAudit.method`):

- a TorchScript module: its profiled forward ("torchscript"); a .pt2 archive (`exported=`): its graph;
- an eager nn.Module: one recorded forward with module hooks ("hooks", services.runtime_walk), walked exactly
  as a torch.export graph is. torch.export (~1 s) is traced only when that recording saw something whose
  eager form may walk differently from export's graph (the rule is in services/runtime_walk.py's docstring:
  an aten op on the image's path outside its known list, a matmul outside nn.Linear, an unknown no-op
  function); the hooks result is kept when export then fails (data-dependent control flow).
  `walker="torch.export"` or `walker="hooks"` forces one of the two.
"""

from __future__ import annotations

import io
import itertools
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from services.conv_inventory import ConvCall, Inventory
from services.errors import ConfigError, ModelError
from services.filter_grid import render_filter_grid
from services.graph_walk import export_inventory
from services.runtime_walk import hooks_inventory, torchscript_inventory

KINDS = ("standard", "pointwise", "depthwise", "grouped", "dilated", "transposed")

Pair = tuple[int, int]
Walker = Literal["auto", "hooks", "torch.export"]


@dataclass(frozen=True)
class ConvLayer:
    """One executed convolution; a module called twice appears twice."""

    name: str  # module path in the user's network, e.g. "features.3"
    kind: str
    in_channels: int
    out_channels: int
    kernel_size: Pair
    stride: Pair
    padding: Pair
    dilation: Pair
    groups: int
    output_shape: tuple[int, int, int]  # (C, H, W) at the audited input size; Conv1d: (C, 1, L)
    params: int
    macs: int  # per image
    receptive_field: Pair  # (h, w) in input pixels, rounded up
    spatial_dims: int = 2  # 1 for Conv1d, whose (1, L) axis is a sequence rather than the image grid

    def to_dict(self) -> dict[str, Any]:
        return _jsonable_dict(asdict(self))


@dataclass(frozen=True)
class CamHead:
    """The model ends in global-average-pool → (flatten) → Linear, so CAM applies with a forward pass only."""

    feature_layer: str  # module whose output is exactly the tensor fed into the global average pool
    classifier: str  # the final Linear


@dataclass(frozen=True)
class ArchitectureAudit:
    """Conv inventory in execution order, totals, CAM head and how the inventory was obtained."""

    input_shape: tuple[int, int, int]
    layers: tuple[ConvLayer, ...]
    totals: dict[str, Any]
    cam_head: CamHead | None
    method: str  # "torch.export", "hooks" or "torchscript"

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "layers": [layer.to_dict() for layer in self.layers],
            "totals": _jsonable_dict(self.totals),
            "cam_head": asdict(self.cam_head) if self.cam_head else None,
            "method": self.method,
        }

    @classmethod
    def unavailable(cls, input_shape: tuple[int, int, int]) -> ArchitectureAudit:
        """The audit of a model that could not be taken apart: no layers, no totals (the report says why)."""
        return cls(input_shape, (), {}, None, "unavailable")

    def last_spatial_conv(self) -> str | None:
        """The last 2-d conv whose output still has H·W > 1: Grad-CAM's "auto" layer."""
        for layer in reversed(self.layers):
            if layer.spatial_dims == 2 and layer.output_shape[1] * layer.output_shape[2] > 1:
                return layer.name
        return None


def conv_kind(
    in_channels: int, groups: int, kernel_size: Pair, dilation: Pair, transposed: bool = False
) -> str:
    """The conv's family, by the precedence in this module's docstring."""
    if transposed:
        return "transposed"
    if groups > 1 and groups == in_channels:
        return "depthwise"
    if 1 < groups < in_channels:
        return "grouped"
    if any(d > 1 for d in dilation):
        return "dilated"
    if tuple(kernel_size) == (1, 1):
        return "pointwise"
    return "standard"


def conv_params(
    in_channels: int,
    out_channels: int,
    kernel_size: Pair,
    groups: int = 1,
    bias: bool = True,
    transposed: bool = False,
) -> int:
    """C_out·(C_in/g)·kh·kw (+C_out bias); transposed: C_in·(C_out/g)·kh·kw (+C_out bias)."""
    kh, kw = kernel_size
    weights = in_channels * (out_channels // groups) if transposed else out_channels * (in_channels // groups)
    return weights * kh * kw + (out_channels if bias else 0)


def conv_macs(
    in_channels: int,
    out_channels: int,
    kernel_size: Pair,
    groups: int,
    input_hw: Pair,
    output_hw: Pair,
    transposed: bool = False,
) -> int:
    """Multiply-accumulates per image: H_out·W_out·C_out·(C_in/g)·kh·kw; transposed: H_in·W_in·C_in·(C_out/g)·kh·kw."""
    kh, kw = kernel_size
    if transposed:
        return input_hw[0] * input_hw[1] * in_channels * (out_channels // groups) * kh * kw
    return output_hw[0] * output_hw[1] * out_channels * (in_channels // groups) * kh * kw


def linear_macs(in_features: int, out_features: int) -> int:
    """Multiply-accumulates of a Linear layer on one image's feature vector."""
    return in_features * out_features


def audit_architecture(
    network: nn.Module,
    input_shape: tuple[int, int, int],
    *,
    exported: torch.export.ExportedProgram | None = None,
    walker: Walker = "auto",
) -> ArchitectureAudit:
    """Inventory the network's convolutions at input_shape (C, H, W), leaving its mode and gradients as found.

    walker (eager modules only): "auto" records a hooked forward and traces torch.export only where that
    recording may differ from it; "hooks" or "torch.export" forces one (a forced export that cannot trace the
    model is a ModelError).
    """
    input_shape = _checked_shape(input_shape)
    with _evaluation_mode(network):
        inventory = _inventory(network, input_shape, exported, walker)
    layers = tuple(_layer(call) for call in inventory.convs)
    totals = _totals(network, layers, inventory)
    cam_head = CamHead(*inventory.cam_head) if inventory.cam_head else None
    return ArchitectureAudit(input_shape, layers, totals, cam_head, inventory.method)


def filter_weights(network: nn.Module, layer: ConvLayer | str) -> tuple[torch.Tensor, str]:
    """One conv layer's weight as (out, in/g, k…) on the CPU, with a title for its filter grid."""
    name = layer.name if isinstance(layer, ConvLayer) else layer
    module = dict(network.named_modules()).get(name)  # get_submodule is not available on TorchScript modules
    weight = getattr(module, "weight", None) if module is not None else None
    if module is None:
        raise ConfigError(f"layer {name!r} does not exist in this model")
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (3, 4):
        where = f"layer {name!r}" if name else "the model's top-level module"
        raise ConfigError(
            f"{where} has no convolution weight (its convolution is a function call such as "
            "torch.nn.functional.conv2d, not a conv module), so its filters cannot be drawn"
        )
    transposed = (
        layer.kind == "transposed"
        if isinstance(layer, ConvLayer)
        else "Transpose" in (getattr(module, "original_name", "") or type(module).__name__)
    )
    if transposed:  # stored as (in, out/g, k…): regroup to (out, in/g, k…) so each tile is one output channel
        groups = layer.groups if isinstance(layer, ConvLayer) else int(getattr(module, "groups", 1))
        per_group = weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:]).transpose(1, 2)
        weight = per_group.reshape(-1, weight.shape[0] // groups, *weight.shape[2:])
    return weight.detach().float().cpu().clone(), f"{name or '(model)'}  weight {list(weight.shape)}"


def save_filter_grid(network: nn.Module, layer: ConvLayer | str, path: str | Path) -> None:
    """PNG grid of one conv layer's filters (normally the first layer's, whose filters see pixels)."""
    render_filter_grid(*filter_weights(network, layer), path)


def _checked_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(
            f"input shape {list(input_shape)} must be (channels, height, width) with positive sizes"
        )
    return shape[0], shape[1], shape[2]


def _inventory(
    network: nn.Module,
    input_shape: tuple[int, int, int],
    exported: torch.export.ExportedProgram | None,
    walker: Walker,
) -> Inventory:
    if exported is not None:
        return export_inventory(exported, input_shape, _module_names(network))
    dummy = _dummy_batch(network, input_shape)
    if isinstance(network, torch.jit.ScriptModule):
        return torchscript_inventory(network, dummy)
    if walker == "torch.export":
        try:
            program = torch.export.export(network, (dummy,), strict=False)
        except Exception as err:  # the caller asked for export and nothing else
            raise ModelError(f"torch.export cannot trace the model: {err}") from err
        return export_inventory(program, input_shape, _module_names(network))
    recorded = hooks_inventory(network, dummy)
    if walker == "hooks" or recorded.inexact is None:
        return recorded.inventory
    try:
        with _quiet_export_failure():
            program = torch.export.export(network, (dummy,), strict=False)
    except Exception:  # data-dependent control flow and unsupported ops: the recorded forward is all there is
        return recorded.inventory
    return export_inventory(program, input_shape, _module_names(network))


@contextmanager
def _quiet_export_failure() -> Iterator[None]:
    """Keep a failed export's partial-graph dump and guard warnings off the user's terminal (we fall back to
    hooks); a successful export's messages are passed on."""
    logger = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    level = logger.level
    captured = io.StringIO()
    logger.setLevel(logging.ERROR)
    try:
        with redirect_stderr(captured):
            yield
    finally:
        logger.setLevel(level)
    sys.stderr.write(captured.getvalue())


def _module_names(network: nn.Module) -> set[str]:
    return {name for name, _ in network.named_modules()}


def _dummy_batch(network: nn.Module, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """A mid-gray batch of one on the model's device and dtype (an all-zero image can hit degenerate paths)."""
    reference = next(
        (t for t in itertools.chain(network.parameters(), network.buffers()) if t.is_floating_point()), None
    )
    dtype = reference.dtype if reference is not None else torch.float32
    device = reference.device if reference is not None else torch.device("cpu")
    return torch.full((1, *input_shape), 0.5, dtype=dtype, device=device)


@contextmanager
def _evaluation_mode(network: nn.Module) -> Iterator[None]:
    """Audit in eval mode, then restore every module's mode and every parameter's requires_grad."""
    modes = [(module, module.training) for module in network.modules()]
    grads = [(parameter, parameter.requires_grad) for parameter in network.parameters()]
    network.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training  # per module, not train(): a parent's train() would reset its children
        for parameter, requires_grad in grads:
            if parameter.requires_grad != requires_grad:
                parameter.requires_grad_(requires_grad)


def _layer(call: ConvCall) -> ConvLayer:
    return ConvLayer(
        name=call.name,
        kind=conv_kind(call.in_channels, call.groups, call.kernel_size, call.dilation, call.transposed),
        in_channels=call.in_channels,
        out_channels=call.out_channels,
        kernel_size=call.kernel_size,
        stride=call.stride,
        padding=call.padding,
        dilation=call.dilation,
        groups=call.groups,
        output_shape=call.output_shape,
        params=conv_params(
            call.in_channels, call.out_channels, call.kernel_size, call.groups, call.has_bias, call.transposed
        ),
        macs=conv_macs(
            call.in_channels,
            call.out_channels,
            call.kernel_size,
            call.groups,
            call.input_hw,
            call.output_shape[1:],
            call.transposed,
        ),
        receptive_field=call.receptive_field,
        spatial_dims=call.spatial_dims,
    )


def _totals(network: nn.Module, layers: tuple[ConvLayer, ...], inventory: Inventory) -> dict[str, Any]:
    # A conv module called twice shares its weight: count its parameters once.
    unique = {call.weight_key: layer.params for call, layer in zip(inventory.convs, layers, strict=True)}
    conv_macs_total = sum(layer.macs for layer in layers)
    return {
        "params": sum(p.numel() for p in network.parameters()),
        "conv_params": sum(unique.values()),
        "macs": conv_macs_total + inventory.linear_macs,
        "conv_macs": conv_macs_total,
        "linear_macs": inventory.linear_macs,
        "conv_layers": len(layers),
        "by_kind": {kind: sum(layer.kind == kind for layer in layers) for kind in KINDS},
        "max_receptive_field": (
            (
                max(layer.receptive_field[0] for layer in layers),
                max(layer.receptive_field[1] for layer in layers),
            )
            if layers
            else None
        ),
    }


def _jsonable_dict(value: dict[str, Any]) -> dict[str, Any]:
    return {key: _jsonable(item) for key, item in value.items()}


def _jsonable(value: object) -> object:
    """Tuples become lists, recursively, so the dicts serialise to JSON unchanged."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(item) for item in value]
    return value
