"""Architecture inventory from one real forward, for models torch.export cannot trace: hooks or TorchScript."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from services.conv_inventory import ChainField, ConvCall, Inventory, as_pair, conv_output_hw, resolve_padding
from services.errors import ModelError

_CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)
_WINDOW_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d)
_GLOBAL_POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass
class _Call:
    """One module call seen by the hooks."""

    name: str
    module: nn.Module
    start: int  # order in which calls began: the innermost of nested calls began last
    inputs: tuple = ()
    output: object = None


def hooks_inventory(network: nn.Module, dummy: torch.Tensor) -> Inventory:
    """Conv calls in execution order from forward hooks; receptive fields from a sequential-chain estimate."""
    calls = _record_calls(network, dummy)
    chain = ChainField((dummy.shape[-2], dummy.shape[-1]))
    convs: list[ConvCall] = []
    linear_macs = 0
    for call in sorted(calls, key=lambda c: c.start):
        module, source = call.module, call.inputs[0] if call.inputs else None
        if not isinstance(source, torch.Tensor) or not isinstance(call.output, torch.Tensor):
            continue
        if isinstance(module, _CONV_MODULES):
            convs.append(_module_conv(call.name, module, source, call.output, chain))
        elif isinstance(module, _WINDOW_POOL_MODULES):
            kernel = as_pair(module.kernel_size)
            chain.window(kernel, as_pair(getattr(module, "dilation", 1)), tuple(source.shape[-2:]))
        elif isinstance(module, _GLOBAL_POOL_MODULES) and tuple(call.output.shape[-2:]) == (1, 1):
            chain.global_pool()
        elif isinstance(module, nn.Linear):
            linear_macs += call.output.numel() // dummy.shape[0] * module.in_features
    return Inventory(tuple(convs), linear_macs, _hooked_cam_head(calls), "hooks")


def _record_calls(network: nn.Module, dummy: torch.Tensor) -> list[_Call]:
    calls: list[_Call] = []
    open_calls: dict[int, list[_Call]] = {}
    handles = []

    def before(module, inputs, name):
        call = _Call(name, module, len(calls), inputs)
        calls.append(call)
        open_calls.setdefault(id(module), []).append(call)

    def after(module, inputs, output):
        open_calls[id(module)].pop().output = output

    try:
        for name, module in network.named_modules():
            handles.append(module.register_forward_pre_hook(lambda m, i, name=name: before(m, i, name)))
            handles.append(module.register_forward_hook(after))
        with torch.no_grad():
            network(dummy)
    except Exception as err:  # the user's forward can raise anything
        raise ModelError(f"the model's forward failed on a {list(dummy.shape)} batch: {err}") from err
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _module_conv(name: str, module: nn.Module, source: torch.Tensor, output: torch.Tensor, chain: ChainField):
    spatial_dims = 1 if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)) else 2
    transposed = isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d))
    kernel, stride = as_pair(module.kernel_size, spatial_dims), as_pair(module.stride, spatial_dims)
    dilation = as_pair(module.dilation, spatial_dims)
    input_hw = as_pair(tuple(source.shape[-spatial_dims:]), spatial_dims)
    output_shape = (
        output.shape[-spatial_dims - 1],
        *as_pair(tuple(output.shape[-spatial_dims:]), spatial_dims),
    )
    if spatial_dims == 2:
        if transposed:
            chain.transposed(kernel, dilation, output_shape[1:])
        else:
            chain.window(kernel, dilation, input_hw)
    return ConvCall(
        name=name,
        weight_key=name,
        transposed=transposed,
        in_channels=module.in_channels,
        out_channels=module.out_channels,
        kernel_size=kernel,
        stride=stride,
        padding=resolve_padding(module.padding, kernel, dilation, spatial_dims),
        dilation=dilation,
        groups=module.groups,
        has_bias=module.bias is not None,
        input_hw=input_hw,
        output_shape=tuple(int(v) for v in output_shape),
        receptive_field=chain.current(),
        spatial_dims=spatial_dims,
    )


def _hooked_cam_head(calls: list[_Call]) -> tuple[str, str] | None:
    """GAP module → (flatten) → last Linear, with the pooled tensor being exactly one module's output."""
    ordered = sorted(calls, key=lambda c: c.start)
    linears = [c for c in ordered if isinstance(c.module, nn.Linear)]
    if not linears:
        return None
    final = linears[-1]
    before = [c for c in ordered if c.start < final.start]
    pools = [
        c
        for c in before
        if isinstance(c.module, nn.AdaptiveAvgPool2d)
        and isinstance(c.output, torch.Tensor)
        and tuple(c.output.shape[-2:]) == (1, 1)
    ]
    if not pools or pools[-1].output.shape[-3] != final.module.in_features:
        return None
    pool = pools[-1]
    if any(isinstance(c.module, _CONV_MODULES) and c.start > pool.start for c in before):
        return None  # more convolutions after the pool: not a GAP → Linear head
    pooled = pool.inputs[0] if pool.inputs else None
    counts = Counter(c.name for c in calls)
    # An in-place ReLU returns its input object, so several modules can "output" the pooled tensor;
    # the one that began last is the innermost producer.
    producers = [c for c in before if c.output is pooled and c.start < pool.start and c.name]
    for call in sorted(producers, key=lambda c: c.start, reverse=True):
        if counts[call.name] == 1:
            return call.name, final.name
    return None


_CONV_EVENTS = {
    "aten::conv1d",
    "aten::conv2d",
    "aten::conv_transpose1d",
    "aten::conv_transpose2d",
    "aten::convolution",
    "aten::_convolution",
}
_WINDOW_EVENTS = {"aten::max_pool2d", "aten::max_pool2d_with_indices", "aten::avg_pool2d"}
_GLOBAL_EVENTS = {"aten::adaptive_avg_pool2d", "aten::adaptive_max_pool2d", "aten::mean"}
_LINEAR_EVENTS = {"aten::linear", "aten::addmm"}
_TRACKED_EVENTS = _CONV_EVENTS | _WINDOW_EVENTS | _GLOBAL_EVENTS | _LINEAR_EVENTS
# Where each conv op keeps its arguments (input, weight and bias come first in all of them).
_CONV_LAYOUT = {
    "aten::conv1d": {"stride": 3, "padding": 4, "dilation": 5, "groups": 6},
    "aten::conv2d": {"stride": 3, "padding": 4, "dilation": 5, "groups": 6},
    "aten::conv_transpose1d": {"stride": 3, "padding": 4, "output_padding": 5, "groups": 6, "dilation": 7},
    "aten::conv_transpose2d": {"stride": 3, "padding": 4, "output_padding": 5, "groups": 6, "dilation": 7},
    "aten::convolution": {
        "stride": 3,
        "padding": 4,
        "dilation": 5,
        "transposed": 6,
        "output_padding": 7,
        "groups": 8,
    },
    "aten::_convolution": {
        "stride": 3,
        "padding": 4,
        "dilation": 5,
        "transposed": 6,
        "output_padding": 7,
        "groups": 8,
    },
}


def torchscript_inventory(network: torch.jit.ScriptModule, dummy: torch.Tensor) -> Inventory:
    """Conv calls from the profiler's recorded aten ops (hooks do not exist on TorchScript), matched to modules."""
    try:
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            network(dummy)
    except Exception as err:  # the scripted forward can raise anything
        raise ModelError(
            f"the TorchScript model's forward failed on a {list(dummy.shape)} batch: {err}"
        ) from err
    events = [e for e in prof.events() if e.name in _TRACKED_EVENTS and not _has_tracked_ancestor(e)]
    events.sort(key=lambda e: e.time_range.start)
    modules = [
        (name, m)
        for name, m in network.named_modules()
        if getattr(m, "original_name", "") in ("Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d")
    ]
    unused = list(modules)
    chain = ChainField((dummy.shape[-2], dummy.shape[-1]))
    convs: list[ConvCall] = []
    linear_macs = 0
    for event in events:
        shapes, values = event.input_shapes, event.concrete_inputs
        if event.name in _CONV_EVENTS and len(shapes[1]) in (3, 4):
            convs.append(_event_conv(event.name, shapes, values, chain, modules, unused))
        elif event.name in _WINDOW_EVENTS:
            kernel = as_pair(values[1])
            dilation = as_pair(values[4]) if event.name != "aten::avg_pool2d" and len(values) > 4 else (1, 1)
            chain.window(kernel, dilation, tuple(shapes[0][-2:]))
        elif event.name in _GLOBAL_EVENTS and _is_global(event.name, shapes, values):
            chain.global_pool()
        elif event.name == "aten::linear" and len(shapes[1]) == 2:
            linear_macs += math.prod(shapes[0][:-1]) // dummy.shape[0] * shapes[1][0] * shapes[1][1]
        elif event.name == "aten::addmm" and len(shapes[2]) == 2:
            linear_macs += shapes[1][0] // dummy.shape[0] * shapes[2][0] * shapes[2][1]
    return Inventory(tuple(convs), linear_macs, None, "torchscript")


def _has_tracked_ancestor(event) -> bool:
    """aten::conv2d calls aten::convolution calls aten::_convolution: count only the outermost."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in _TRACKED_EVENTS:
            return True
        parent = parent.cpu_parent
    return False


def _is_global(name: str, shapes, values) -> bool:
    if name == "aten::mean":
        dims = values[1] if len(values) > 1 else None
        return len(shapes[0]) == 4 and (not dims or {2, 3} <= {d % 4 for d in dims})
    return values[1] is not None and as_pair(values[1]) == (1, 1)


def _event_conv(name, shapes, values, chain: ChainField, modules, unused) -> ConvCall:
    layout = _CONV_LAYOUT[name]
    transposed = "conv_transpose" in name or bool(
        values[layout["transposed"]] if "transposed" in layout else False
    )
    weight_shape, input_shape = tuple(shapes[1]), tuple(shapes[0])
    spatial_dims = len(weight_shape) - 2
    groups = int(values[layout["groups"]])
    kernel = as_pair(weight_shape[2:], spatial_dims)
    stride = as_pair(values[layout["stride"]], spatial_dims)
    dilation = as_pair(values[layout["dilation"]], spatial_dims)
    raw_padding = values[layout["padding"]]
    padding = resolve_padding(raw_padding, kernel, dilation, spatial_dims)
    input_hw = as_pair(input_shape[-spatial_dims:], spatial_dims)
    output_padding = as_pair(values[layout["output_padding"]], spatial_dims) if transposed else (0, 0)
    output_hw = conv_output_hw(
        input_hw,
        kernel,
        stride,
        raw_padding if isinstance(raw_padding, str) else padding,
        dilation,
        transposed,
        output_padding,
    )
    in_channels, out_channels = (
        (weight_shape[0], weight_shape[1] * groups)
        if transposed
        else (weight_shape[1] * groups, weight_shape[0])
    )
    if spatial_dims == 2:
        if transposed:
            chain.transposed(kernel, dilation, output_hw)
        else:
            chain.window(kernel, dilation, input_hw)
    module_name = _match_module(weight_shape, stride, padding, dilation, groups, modules, unused)
    return ConvCall(
        name=module_name,
        weight_key=module_name or f"<functional {len(unused)}>",
        transposed=transposed,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        has_bias=len(shapes[2]) > 0,
        input_hw=input_hw,
        output_shape=(out_channels, *output_hw),
        receptive_field=chain.current(),
        spatial_dims=spatial_dims,
    )


def _match_module(weight_shape, stride, padding, dilation, groups, modules, unused) -> str:
    """The first not-yet-matched conv module with this weight shape and geometry (reused modules match again).

    Scripted modules keep stride/padding/…; traced ones keep only their weight, so those match on shape alone.
    """

    def fits(module) -> bool:
        if tuple(module.weight.shape) != weight_shape:
            return False
        spatial_dims = len(weight_shape) - 2
        checks = (("stride", stride), ("dilation", dilation), ("groups", groups))
        for attribute, value in checks:
            if hasattr(module, attribute):
                actual = getattr(module, attribute)
                if (actual if attribute == "groups" else as_pair(actual, spatial_dims)) != value:
                    return False
        if hasattr(module, "padding") and not isinstance(module.padding, str):
            return as_pair(module.padding, spatial_dims) == padding
        return True

    for pool in (unused, modules):
        for index, (name, module) in enumerate(pool):
            if fits(module):
                if pool is unused:
                    del unused[index]
                return name
    return ""
