"""Architecture inventory from one real forward: module hooks for eager modules, the profiler for TorchScript.

Eager modules (`hooks_inventory`): forward pre/post hooks on every module keep the stack of module calls under
way, and a dispatch mode records each aten op the forward runs, with its arguments, output shapes and that
stack (export's nn_module_stack), into an fx graph. services.graph_walk then walks that graph exactly as it
walks a torch.export program, so both give the same table wherever the two graphs agree.

They do not always agree: torch.export records ops before PyTorch decomposes composite ops, the eager forward
records them after. `HooksInventory.inexact` says why the recorded walk may differ from export's, None when it
cannot, which is when all three hold:

1. every aten op on the image's data path is in `_EXACT_OPS`: convolutions, window/adaptive/global pools,
   mean/sum/amax/amin, batch norm, pointwise activations and arithmetic, cat/split and plain views, whose
   decomposed form walks like torch.export's op (conv2d→convolution, linear→t+addmm, adaptive_avg_pool2d(1)→
   mean, max_pool2d→max_pool2d_with_indices, chunk→split, flatten→view …). Anything else (upsampling,
   padding, pixel shuffle, expand, indexing, normalisations other than batch norm, attention, custom and C++
   ops) is left to torch.export;
2. every matrix multiply (addmm/mm) is an nn.Linear applied to flat (not 4-d) features, so it is the
   decomposition of export's aten.linear and not a torch.matmul/einsum export would keep as is;
3. every torch function that returns its input without running an aten op is a known no-op (eval-mode
   dropout, contiguous() or flatten() of a tensor already so), recorded as an alias node where export
   records the op; another such call (a no-op .to(), requires_grad_(), …) may hide a node export keeps.

A module called through .forward() (no hooks fire) or built during the forward is attributed to its caller;
models doing that are rare and outside this guarantee.
"""

from __future__ import annotations

import math
import operator
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.autograd.profiler_util import FunctionEvent
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from services.conv_inventory import (
    ChainField,
    ConvCall,
    Inventory,
    Pair,
    as_pair,
    conv_output_hw,
    resolve_padding,
)
from services.errors import ModelError
from services.graph_shapes import Shapes
from services.graph_walk import GraphFacts, walk_graph

aten = torch.ops.aten
_LINEAR_OPS = {aten.addmm, aten.mm}
_EXACT_OPS = {
    aten.convolution,
    aten.native_batch_norm,
    aten._native_batch_norm_legit_no_training,
    aten._native_batch_norm_legit,
    aten.max_pool2d_with_indices,
    aten.avg_pool2d,
    aten._adaptive_avg_pool2d,
    aten.adaptive_max_pool2d,
    aten.mean,
    aten.sum,
    aten.amax,
    aten.amin,
    aten.relu,
    aten.relu_,
    aten.hardtanh,
    aten.hardtanh_,
    aten.hardswish,
    aten.hardswish_,
    aten.hardsigmoid,
    aten.hardsigmoid_,
    aten.silu,
    aten.silu_,
    aten.sigmoid,
    aten.sigmoid_,
    aten.tanh,
    aten.tanh_,
    aten.gelu,
    aten.gelu_,
    aten.leaky_relu,
    aten.leaky_relu_,
    aten.elu,
    aten.elu_,
    aten.add,
    aten.add_,
    aten.sub,
    aten.sub_,
    aten.mul,
    aten.mul_,
    aten.div,
    aten.div_,
    aten.cat,
    aten.split,
    aten.split_with_sizes,
    aten.view,
    aten._unsafe_view,
    aten.transpose,
    aten.permute,
    aten.clone,
    aten.t,
    aten.detach,
    aten.alias,
    *_LINEAR_OPS,
}
# Torch functions that may return their input untouched, without any aten op, where torch.export records a
# pass-through node (aten.dropout, aten.contiguous, aten.flatten): the recording puts an alias in its place.
_KNOWN_NO_OPS: set[Callable[..., Any]] = {
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    torch.dropout,
    torch.Tensor.contiguous,
    torch.flatten,
    torch.Tensor.flatten,
}


@dataclass(frozen=True)
class HooksInventory:
    """The recorded forward's inventory, and why torch.export might report something else (None: it cannot)."""

    inventory: Inventory
    inexact: str | None


def hooks_inventory(network: nn.Module, dummy: torch.Tensor) -> HooksInventory:
    """Record one forward of the eager network on dummy and walk it like a torch.export graph."""
    recording = _Recording(network, dummy)
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name, module in network.named_modules():
            handles.append(module.register_forward_pre_hook(recording.pre_hook(name)))
            handles.append(module.register_forward_hook(recording.post_hook))
        with torch.no_grad(), _NoOpWatch(recording), _AtenRecorder(recording):
            network(dummy)
    except Exception as err:  # the user's forward can raise anything
        raise ModelError(f"the model's forward failed on a {list(dummy.shape)} batch: {err}") from err
    finally:
        for handle in handles:
            handle.remove()
    facts = GraphFacts(recording.shapes, int(dummy.shape[0]), recording.user_input, recording.parameters)
    input_shape = (int(dummy.shape[1]), int(dummy.shape[2]), int(dummy.shape[3]))
    names = {name for name, _ in network.named_modules()}
    inventory = walk_graph(recording.graph, facts, input_shape, names, "hooks")
    return HooksInventory(inventory, recording.inexact or _off_list_op(recording))


class _Recording:
    """The fx graph of one eager forward: aten ops with their arguments, shapes and module stacks."""

    def __init__(self, network: nn.Module, dummy: torch.Tensor) -> None:
        self.graph = fx.Graph()
        self.shapes: Shapes = {}
        self.parameters: dict[str, str] = {}  # placeholder name -> parameter path, as export's signature has
        self.inexact: str | None = None
        self.aten_ops = 0
        self._parameter_paths = {id(p): name for name, p in network.named_parameters()}
        # id(tensor) -> (the tensor, weakly, and the node that last wrote it); ids of dead tensors get reused
        self._producers: dict[int, tuple[weakref.ref[torch.Tensor], fx.Node]] = {}
        self._stack: list[
            tuple[str, tuple[str, str]]
        ] = []  # (call key, (module path, type)), outermost first
        self._modules: list[nn.Module] = []
        self._calls: Counter[str] = Counter()
        self.user_input = self._placeholder(dummy, "x").name

    # ---- module hooks ----

    def pre_hook(self, name: str) -> Callable[[nn.Module, tuple[object, ...]], None]:
        def enter(module: nn.Module, inputs: tuple[object, ...]) -> None:
            count = self._calls[name]
            self._calls[name] += 1
            key = "L__self__" + name + (f"@{count}" if count else "")  # export's keys: "L__self__fc", "…@1"
            kind = f"{type(module).__module__}.{type(module).__qualname__}"
            self._stack.append((key, (name, kind)))
            self._modules.append(module)
            source = inputs[0] if inputs else None
            if isinstance(module, nn.Linear) and isinstance(source, torch.Tensor) and source.dim() == 4:
                self._flag(f"Linear {name!r} runs on a 4-d map (export walks it as one op, eager as three)")

        return enter

    def post_hook(self, module: nn.Module, inputs: tuple[object, ...], output: object) -> None:
        self._stack.pop()
        self._modules.pop()

    # ---- ops ----

    def aten_op(
        self, func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any], out: object
    ) -> None:
        self.aten_ops += 1
        if func.overloadpacket in _LINEAR_OPS and not (
            self._modules and isinstance(self._modules[-1], nn.Linear)
        ):
            self._flag(f"{func.overloadpacket.__name__} outside an nn.Linear (torch.matmul or einsum)")
        node = self.graph.create_node(
            "call_function", func, tree_map(self._arg, args), tree_map(self._arg, kwargs)
        )
        self._emit(node, out)

    def no_op(self, func: Callable[..., Any], out: torch.Tensor) -> None:
        """A torch function returned its input without running an aten op."""
        if func not in _KNOWN_NO_OPS:
            self._flag(f"{getattr(func, '__name__', func)} returned its input without an aten op")
        self._emit(self.graph.create_node("call_function", aten.alias.default, (self._arg(out),)), out)

    def _emit(self, node: fx.Node, out: object) -> None:
        node.meta["nn_module_stack"] = dict(self._stack)
        if isinstance(out, torch.Tensor):
            self._produced(out, node)
        elif isinstance(out, (tuple, list)):
            for index, item in enumerate(out):
                if isinstance(item, torch.Tensor):
                    getter = self.graph.create_node("call_function", operator.getitem, (node, index))
                    getter.meta["nn_module_stack"] = node.meta["nn_module_stack"]
                    self._produced(item, getter)

    def _produced(self, tensor: torch.Tensor, node: fx.Node) -> None:
        self._producers[id(tensor)] = (weakref.ref(tensor), node)
        self.shapes[node] = tuple(int(size) for size in tensor.shape)

    def _arg(self, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        known = self._producers.get(id(value))
        if known is not None and known[0]() is value:
            return known[1]
        path = self._parameter_paths.get(id(value))
        node = self._placeholder(value, "p_" + path.replace(".", "_") if path is not None else "c")
        if path is not None:
            self.parameters[node.name] = path
        return node

    def _placeholder(self, tensor: torch.Tensor, name: str) -> fx.Node:
        node = self.graph.placeholder(name)
        self._produced(tensor, node)
        return node

    def _flag(self, reason: str) -> None:
        self.inexact = self.inexact or reason


def _off_list_op(recording: _Recording) -> str | None:
    """The first op on the image's data path outside _EXACT_OPS, if any."""
    on_path = {node for node in recording.graph.nodes if node.name == recording.user_input}
    for node in recording.graph.nodes:
        if node.op != "call_function" or not any(arg in on_path for arg in _node_args(node)):
            continue
        on_path.add(node)
        packet = getattr(node.target, "overloadpacket", None)
        if node.target is not operator.getitem and packet not in _EXACT_OPS:
            return f"{node.target} is not known to walk the same as in torch.export's graph"
    return None


def _node_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return found


# torch.utils._python_dispatch is not annotated: its __init_subclass__ and __init__ are untyped calls.
class _AtenRecorder(TorchDispatchMode):  # type: ignore[no-untyped-call]
    def __init__(self, recording: _Recording) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.recording = recording

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Sequence[type],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        out = func(*args, **kwargs)
        self.recording.aten_op(func, args, kwargs, out)
        return out


class _NoOpWatch(TorchFunctionMode):
    """Spots torch functions that hand back their input without running an aten op (see _KNOWN_NO_OPS)."""

    def __init__(self, recording: _Recording) -> None:
        super().__init__()
        self.recording = recording

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        before = self.recording.aten_ops
        out = func(*args, **kwargs)
        if (
            self.recording.aten_ops == before
            and isinstance(out, torch.Tensor)
            and any(out is value for value in tree_flatten((args, kwargs))[0])
        ):
            self.recording.no_op(func, out)
        return out


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


def _has_tracked_ancestor(event: FunctionEvent) -> bool:
    """aten::conv2d calls aten::convolution calls aten::_convolution: count only the outermost."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in _TRACKED_EVENTS:
            return True
        parent = parent.cpu_parent
    return False


def _is_global(name: str, shapes: Sequence[Sequence[int]], values: Sequence[Any]) -> bool:
    if name == "aten::mean":
        dims = values[1] if len(values) > 1 else None
        return len(shapes[0]) == 4 and (not dims or {2, 3} <= {d % 4 for d in dims})
    return values[1] is not None and as_pair(values[1]) == (1, 1)


def _event_conv(
    name: str,
    shapes: Sequence[Sequence[int]],
    values: Sequence[Any],
    chain: ChainField,
    modules: list[tuple[str, nn.Module]],
    unused: list[tuple[str, nn.Module]],
) -> ConvCall:
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


def _match_module(
    weight_shape: tuple[int, ...],
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    groups: int,
    modules: list[tuple[str, nn.Module]],
    unused: list[tuple[str, nn.Module]],
) -> str:
    """The first not-yet-matched conv module with this weight shape and geometry (reused modules match again).

    Scripted modules keep stride/padding/…; traced ones keep only their weight, so those match on shape alone.
    """

    def fits(module: nn.Module) -> bool:
        weight = module.weight
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != weight_shape:
            return False
        spatial_dims = len(weight_shape) - 2
        checks = (("stride", stride), ("dilation", dilation), ("groups", groups))
        for attribute, value in checks:
            if hasattr(module, attribute):
                actual = getattr(module, attribute)
                if (actual if attribute == "groups" else as_pair(actual, spatial_dims)) != value:
                    return False
        module_padding = getattr(module, "padding", None)
        if module_padding is not None and not isinstance(module_padding, str):
            return as_pair(module_padding, spatial_dims) == padding
        return True

    for pool in (unused, modules):
        for index, (name, module) in enumerate(pool):
            if fits(module):
                if pool is unused:
                    del unused[index]
                return name
    return ""
