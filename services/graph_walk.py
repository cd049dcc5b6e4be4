"""Architecture inventory from a torch.export graph: conv calls, receptive fields, linear MACs, CAM head."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import fx
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from services.conv_inventory import ConvCall, Inventory, Pair, as_pair, resolve_padding, rf_int
from services.errors import ModelError
from services.graph_shapes import Shapes, node_shapes

aten = torch.ops.aten
_CONVS = {aten.conv1d, aten.conv2d, aten.convolution, aten._convolution}
_TRANSPOSED_CONVS = {aten.conv_transpose1d, aten.conv_transpose2d}
_WINDOW_POOLS = {aten.max_pool2d, aten.max_pool2d_with_indices, aten.avg_pool2d}
_ADAPTIVE_POOLS = {aten.adaptive_avg_pool2d, aten._adaptive_avg_pool2d, aten.adaptive_max_pool2d}
_AVERAGE_POOLS = {aten.adaptive_avg_pool2d, aten._adaptive_avg_pool2d, aten.avg_pool2d}
_REDUCTIONS = {aten.mean, aten.sum, aten.amax, aten.amin}
_LINEARS = {aten.linear, aten.addmm, aten.mm}
# Ops that may sit between the global pool and the classifier without changing what CAM computes.
_HEAD_PASSTHROUGH = {
    aten.view,
    aten.reshape,
    aten.flatten,
    aten.squeeze,
    aten._unsafe_view,
    aten.clone,
    aten.contiguous,
    aten.alias,
    aten.detach,
    aten.dropout,
    aten.dropout_,
    aten.feature_dropout,
    aten.feature_dropout_,
}

Field = list[float]  # [rf_h, rf_w, jump_h, jump_w]


def export_inventory(
    ep: ExportedProgram, input_shape: tuple[int, int, int], module_names: set[str]
) -> Inventory:
    """Walk an exported program's graph in topological order; shapes are those at input_shape."""
    user_inputs = [
        spec.arg.name for spec in ep.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT
    ]
    if len(user_inputs) != 1:
        raise ModelError(
            f"the exported model takes {len(user_inputs)} inputs; advaudit needs one image batch"
        )
    shapes, batch = node_shapes(ep, input_shape, user_inputs[0])
    return walk_graph(
        ep.graph,
        GraphFacts(shapes, batch, user_inputs[0], ep.graph_signature.inputs_to_parameters),
        input_shape,
        module_names,
        "torch.export",
    )


@dataclass(frozen=True)
class GraphFacts:
    """What the walk needs besides the graph: tensor shapes at the audited size, the batch those shapes carry,
    the image placeholder's name and which placeholders are parameters (name -> parameter path)."""

    shapes: Shapes
    batch: int
    user_input: str
    parameters: Mapping[str, str]


def walk_graph(
    graph: fx.Graph, facts: GraphFacts, input_shape: tuple[int, int, int], module_names: set[str], method: str
) -> Inventory:
    """The inventory of an aten-level graph whose nodes carry export's nn_module_stack metadata.

    torch.export's program and the eager recording of services.runtime_walk both end up here, so the two
    can only differ where their graphs do.
    """
    shapes = facts.shapes
    names = _ModulePaths(graph, module_names)
    image_hw = (input_shape[1], input_shape[2])
    fields: dict[fx.Node, Field] = {}
    convs: list[ConvCall] = []
    for node in graph.nodes:
        if node.op == "placeholder" and node.name == facts.user_input:
            fields[node] = [1.0, 1.0, 1.0, 1.0]
        if node.op != "call_function":
            continue
        incoming = [fields[arg] for arg in _tensor_args(node) if arg in fields]
        if not incoming:
            continue  # computed from parameters only (e.g. a standardised weight): no receptive field
        field = [
            max(values) for values in zip(*incoming, strict=True)
        ]  # merges (adds, concats) keep the widest
        packet = _packet(node)
        if packet in _CONVS or packet in _TRANSPOSED_CONVS:
            call = _conv_call(node, shapes, field, names, facts.parameters)
            if call is not None:
                convs.append(call)
        elif packet in _WINDOW_POOLS:
            _window_pool(node, field)
        elif packet in _ADAPTIVE_POOLS:
            _adaptive_pool(node, shapes, field, image_hw)
        elif packet in _REDUCTIONS:
            _reduction(node, shapes, field, image_hw)
        elif len(incoming) == 1:
            _resample(node, shapes, field)
        fields[node] = field
    return Inventory(
        tuple(convs),
        _linear_macs(graph, shapes, facts.batch),
        _cam_head(graph, shapes, names),
        method,
    )


class _ModulePaths:
    """Module paths from nn_module_stack, normalised so that network.get_submodule accepts them."""

    def __init__(self, graph: fx.Graph, module_names: set[str]) -> None:
        self.module_names = module_names
        self.flat_names = {name.replace(".", "_"): name for name in module_names}
        self.calls: dict[str, set[str]] = defaultdict(set)  # path -> distinct call keys ("x", "x@1", …)
        for node in graph.nodes:
            for key, entry in self.stack(node):
                self.calls[self.normalise(entry[0])].add(key)

    @staticmethod
    def stack(node: fx.Node) -> list[tuple[str, tuple[str, Any]]]:
        """[(call key, (path, type)), …] from the outermost module to the innermost."""
        return list((node.meta.get("nn_module_stack") or {}).items())

    def normalise(self, path: str) -> str:
        path = re.sub(r"@\d+$", "", str(path))  # a repeated call of one module is tagged "path@1"
        if path in self.module_names:
            return path
        # Older exporters wrote Dynamo names such as "L__self___features_3"; map them back to "features.3".
        flat = re.sub(r"^L__self__[._]?", "", path).replace(".", "_")
        return self.flat_names.get(flat, path)

    def innermost(self, node: fx.Node) -> tuple[str, str]:
        """(path, type name) of the innermost module that ran this node; ("", "") when unknown."""
        stack = self.stack(node)
        return (self.normalise(stack[-1][1][0]), str(stack[-1][1][1])) if stack else ("", "")

    def called_once(self, path: str) -> bool:
        return len(self.calls.get(path, ())) == 1


def _packet(node: fx.Node) -> object:
    return getattr(node.target, "overloadpacket", None)


def _bound_args(node: fx.Node) -> dict[str, Any]:
    """The op's arguments by schema name, defaults filled in."""
    values: dict[str, Any] = {}
    schema = cast(torch._ops.OpOverload, node.target)._schema  # only called on aten ops
    for index, argument in enumerate(schema.arguments):
        if index < len(node.args):
            values[argument.name] = node.args[index]
        elif argument.name in node.kwargs:
            values[argument.name] = node.kwargs[argument.name]
        elif argument.has_default_value():
            values[argument.name] = argument.default_value
    return values


def _shape_of(shapes: Shapes, value: object) -> tuple[int, ...] | None:
    return shapes.get(value) if isinstance(value, fx.Node) else None


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return found


def _conv_call(
    node: fx.Node, shapes: Shapes, field: Field, names: _ModulePaths, params: Mapping[str, str]
) -> ConvCall | None:
    args = _bound_args(node)
    weight, source = args["weight"], args["input"]
    weight_shape, input_shape, output_shape = shapes.get(weight), shapes.get(source), shapes.get(node)
    if weight_shape is None or input_shape is None or output_shape is None or len(weight_shape) not in (3, 4):
        return None  # Conv3d and exotic calls are outside an image-classifier audit
    spatial_dims = len(weight_shape) - 2
    transposed = _packet(node) in _TRANSPOSED_CONVS or bool(args.get("transposed", False))
    groups = int(args.get("groups", 1))
    kernel = as_pair(weight_shape[2:], spatial_dims)
    stride, dilation = (
        as_pair(args.get("stride", 1), spatial_dims),
        as_pair(args.get("dilation", 1), spatial_dims),
    )
    if spatial_dims == 2:
        _conv_field(field, kernel, stride, dilation, transposed)
    # else: a Conv1d runs along a sequence (often the channel axis, as in ECA), not the image grid
    path, _ = names.innermost(node)
    if not path and isinstance(weight, fx.Node) and weight.name in params:
        path = params[weight.name].rpartition(".")[
            0
        ]  # functional conv at the top level: use its weight's owner
    in_channels, out_channels = (
        (weight_shape[0], weight_shape[1] * groups)
        if transposed
        else (weight_shape[1] * groups, weight_shape[0])
    )
    return ConvCall(
        name=path,
        weight_key=weight.name if isinstance(weight, fx.Node) else node.name,
        transposed=transposed,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel,
        stride=stride,
        padding=resolve_padding(args.get("padding", 0), kernel, dilation, spatial_dims),
        dilation=dilation,
        groups=groups,
        has_bias=args.get("bias") is not None,
        input_hw=as_pair(input_shape[-spatial_dims:], spatial_dims),
        output_shape=(output_shape[-spatial_dims - 1], *as_pair(output_shape[-spatial_dims:], spatial_dims)),
        receptive_field=rf_int(field[:2]),
        spatial_dims=spatial_dims,
    )


def _conv_field(field: Field, kernel: Pair, stride: Pair, dilation: Pair, transposed: bool) -> None:
    """rf += (k−1)·d·jump_in, jump *= s; a transposed conv first divides the jump by s (its taps sit on the
    finer output grid), then widens the field with that output jump."""
    for axis in range(2):
        if transposed:
            field[2 + axis] /= stride[axis]
            field[axis] += (kernel[axis] - 1) * dilation[axis] * field[2 + axis]
        else:
            field[axis] += (kernel[axis] - 1) * dilation[axis] * field[2 + axis]
            field[2 + axis] *= stride[axis]


def _window_pool(node: fx.Node, field: Field) -> None:
    args = _bound_args(node)
    kernel = as_pair(args["kernel_size"])
    stride = as_pair(args["stride"]) if args.get("stride") else kernel
    _conv_field(field, kernel, stride, as_pair(args.get("dilation", 1)), transposed=False)


def _adaptive_pool(node: fx.Node, shapes: Shapes, field: Field, image_hw: Pair) -> None:
    source = _shape_of(shapes, node.args[0])
    if source is None or len(source) < 2:
        return
    output_hw = as_pair(_bound_args(node)["output_size"])
    for axis, (size_in, size_out) in enumerate(zip(source[-2:], output_hw, strict=True)):
        if size_out == 1:
            field[axis] = max(field[axis], float(image_hw[axis]))  # global: the jump no longer matters
        elif size_out != size_in:
            # PyTorch's adaptive windows are about ceil(in/out) wide and in/out apart.
            field[axis] += (math.ceil(size_in / size_out) - 1) * field[2 + axis]
            field[2 + axis] *= size_in / size_out


def _reduction(node: fx.Node, shapes: Shapes, field: Field, image_hw: Pair) -> None:
    source = _shape_of(shapes, node.args[0])
    if source is None or len(source) != 4:
        return
    dims = _bound_args(node).get("dim")
    reduced = {d % 4 for d in dims} if dims else {0, 1, 2, 3}
    for axis in range(2):
        if 2 + axis in reduced:
            field[axis] = max(field[axis], float(image_hw[axis]))


def _resample(node: fx.Node, shapes: Shapes, field: Field) -> None:
    """Unknown one-input ops that change the map size (upsampling, pixel shuffle, strided slices) rescale the jump."""
    source = next(iter(_tensor_args(node)), None)
    size_in, size_out = _shape_of(shapes, source), shapes.get(node)
    if size_in is None or size_out is None or len(size_in) != 4 or len(size_out) != 4:
        return
    for axis in range(2):
        if size_out[2 + axis] and size_in[2 + axis] != size_out[2 + axis]:
            field[2 + axis] *= size_in[2 + axis] / size_out[2 + axis]


def _linear_macs(graph: fx.Graph, shapes: Shapes, batch: int) -> int:
    """in·out per output row; a classifier has one row per image (token-wise linears have several)."""
    total = 0
    for node in graph.nodes:
        packet = _packet(node)
        if node.op != "call_function" or packet not in _LINEARS or node not in shapes:
            continue
        weight = (
            node.args[1] if packet is aten.linear else node.args[2] if packet is aten.addmm else node.args[1]
        )
        weight_shape = shapes.get(weight)
        if weight_shape is None or len(weight_shape) != 2:
            continue
        in_features = weight_shape[1] if packet is aten.linear else weight_shape[0]
        total += math.prod(shapes[node]) // max(batch, 1) * in_features
    return total


def _cam_head(graph: fx.Graph, shapes: Shapes, names: _ModulePaths) -> tuple[str, str] | None:
    """(feature_layer, classifier) when the model ends in global-average-pool → (flatten) → Linear."""
    linears = [n for n in graph.nodes if n.op == "call_function" and _packet(n) in _LINEARS]
    if not linears:
        return None
    final = linears[-1]
    classifier, kind = names.innermost(final)
    if not classifier or classifier not in names.module_names or not kind.endswith("Linear"):
        return None
    pooled = final.args[1] if _packet(final) is aten.addmm else final.args[0]
    while isinstance(pooled, fx.Node) and _packet(pooled) in _HEAD_PASSTHROUGH:
        pooled = pooled.args[0]
    if not isinstance(pooled, fx.Node) or not _is_global_average(pooled, shapes):
        return None
    feature = _output_module(pooled.args[0], pooled, names)
    return (feature, classifier) if feature else None


def _is_global_average(node: fx.Node, shapes: Shapes) -> bool:
    packet, source = _packet(node), _shape_of(shapes, node.args[0])
    if source is None or len(source) != 4:
        return False
    if packet is aten.mean:
        dims = _bound_args(node).get("dim")
        return not dims or {2, 3} <= {d % 4 for d in dims} and 1 not in {d % 4 for d in dims}
    if packet not in _AVERAGE_POOLS or shapes.get(node, ())[-2:] != (1, 1):
        return False
    if packet is aten.avg_pool2d:  # a fixed window only counts when it covers the whole map without padding
        args = _bound_args(node)
        kernel, padding = as_pair(args["kernel_size"]), as_pair(args.get("padding", 0))
        return padding == (0, 0) and kernel[0] >= source[2] and kernel[1] >= source[3]
    return True


def _output_module(producer: object, pool: fx.Node, names: _ModulePaths) -> str | None:
    """Innermost module, called exactly once, whose output is the pooled tensor (so a hook on it sees that
    tensor and nothing else): the modules the producer ran in but the pool does not."""
    if not isinstance(producer, fx.Node):
        return None
    pool_calls = {key for key, _ in names.stack(pool)}
    for key, entry in reversed(names.stack(producer)):
        if key in pool_calls:
            return None  # the tensor never leaves this module, so it is no module's output
        path = names.normalise(entry[0])
        if path and path in names.module_names and names.called_once(path):
            return path
    return None
