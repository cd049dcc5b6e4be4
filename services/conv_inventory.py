"""Raw facts the architecture walkers collect (one record per convolution call) and shared geometry helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Pair = tuple[int, int]


@dataclass(frozen=True)
class ConvCall:
    """One executed convolution as a walker saw it, before costs and kinds are derived."""

    name: str  # module path in the user's network ("" when the conv is a functional call at the top level)
    weight_key: str  # identifies the weight tensor, so a conv module called twice counts its params once
    transposed: bool
    in_channels: int
    out_channels: int
    kernel_size: Pair
    stride: Pair
    padding: Pair
    dilation: Pair
    groups: int
    has_bias: bool
    input_hw: Pair
    output_shape: tuple[int, int, int]
    receptive_field: Pair
    spatial_dims: int = 2  # 1 for Conv1d: its (1, L) "image" is a sequence, often channels (ECA), not pixels


@dataclass(frozen=True)
class Inventory:
    """Everything a walker found: conv calls in execution order, linear MACs and the CAM head, if any."""

    convs: tuple[ConvCall, ...]
    linear_macs: int
    cam_head: tuple[str, str] | None  # (feature_layer, classifier)
    method: str


def as_pair(value: int | Sequence[int], spatial_dims: int = 2) -> Pair:
    """(h, w) from an int or a 1/2-element sequence; a 1-d value becomes (1, v) for 1-d ops."""
    values = [int(value)] if isinstance(value, int) else [int(v) for v in value]
    if len(values) == 1:
        values = [1, values[0]] if spatial_dims == 1 else values * 2
    return values[0], values[1]


def resolve_padding(
    padding: str | int | Sequence[int], kernel: Pair, dilation: Pair, spatial_dims: int
) -> Pair:
    """Numeric (h, w) padding; the string forms report the leading pad that "same"/"valid" imply."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        return (dilation[0] * (kernel[0] - 1)) // 2, (dilation[1] * (kernel[1] - 1)) // 2
    if isinstance(padding, str):
        raise ValueError(f"unknown padding mode {padding!r}")
    return as_pair(padding, spatial_dims)


def conv_output_hw(
    input_hw: Pair,
    kernel: Pair,
    stride: Pair,
    padding: Pair | str,
    dilation: Pair,
    transposed: bool,
    output_padding: Pair = (0, 0),
) -> Pair:
    """Spatial output size of a convolution (PyTorch's documented shape formulas)."""
    if padding == "same":
        return input_hw
    pad: Pair = (0, 0) if isinstance(padding, str) else padding  # "valid"
    sizes = []
    for axis in range(2):
        size, k, s, p, d = input_hw[axis], kernel[axis], stride[axis], pad[axis], dilation[axis]
        if transposed:
            sizes.append((size - 1) * s - 2 * p + d * (k - 1) + output_padding[axis] + 1)
        else:
            sizes.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
    return sizes[0], sizes[1]


def rf_int(field: Sequence[float]) -> Pair:
    """Report a receptive field in whole pixels; transposed convs can make it fractional, so round up."""
    return math.ceil(field[0] - 1e-9), math.ceil(field[1] - 1e-9)


class ChainField:
    """Receptive field of a sequential chain, for walkers that see no graph (hooks, TorchScript).

    The jump (input pixels between neighbouring units) is taken from the feature-map size rather than the
    product of strides, so a stride-2 1×1 shortcut in a residual block does not count its stride twice;
    parallel branches (Inception) still add up, so this over-estimates such networks.
    """

    def __init__(self, image_hw: Pair) -> None:
        self.image_hw = image_hw
        self.field = [1.0, 1.0]

    def window(self, kernel: Pair, dilation: Pair, input_hw: Pair) -> None:
        """A conv or pooling window applied to a map of size input_hw."""
        for axis in range(2):
            jump = self.image_hw[axis] / max(input_hw[axis], 1)
            self.field[axis] += (kernel[axis] - 1) * dilation[axis] * jump

    def transposed(self, kernel: Pair, dilation: Pair, output_hw: Pair) -> None:
        """A transposed conv: its taps are spaced by the output jump (see graph_walk)."""
        for axis in range(2):
            jump = self.image_hw[axis] / max(output_hw[axis], 1)
            self.field[axis] += (kernel[axis] - 1) * dilation[axis] * jump

    def global_pool(self) -> None:
        """Global pooling: every later unit sees the whole input."""
        self.field = [max(self.field[axis], float(self.image_hw[axis])) for axis in range(2)]

    def current(self) -> Pair:
        return rf_int(self.field)
