"""Tensor shapes of an exported graph at the audited input size, re-derived when it was traced at another."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

from services.errors import ModelError

Shapes = dict[fx.Node, tuple[int, ...]]
"""Each tensor node's shape."""


def node_shapes(
    ep: ExportedProgram, input_shape: tuple[int, int, int], user_input: str
) -> tuple[Shapes, int]:
    """Shape of every tensor node at input_shape, plus the batch size those shapes carry."""
    placeholder = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == user_input)
    traced = placeholder.meta.get("val")
    traced_shape = tuple(traced.shape) if isinstance(traced, torch.Tensor) else ()
    static = all(isinstance(size, int) for size in traced_shape) and len(traced_shape) == 4
    if static and traced_shape[1:] == tuple(input_shape):
        shapes = {
            n: tuple(int(s) for s in n.meta["val"].shape)
            for n in ep.graph.nodes
            if isinstance(n.meta.get("val"), torch.Tensor)
        }
        return shapes, traced_shape[0]
    # Traced at another size (or with symbolic sizes): re-run the graph on a real batch and record the shapes.
    batch = traced_shape[0] if traced_shape and isinstance(traced_shape[0], int) else 1
    reference = next((t for t in ep.state_dict.values() if t.is_floating_point()), torch.zeros(()))
    dummy = torch.full((batch, *input_shape), 0.5, dtype=reference.dtype, device=reference.device)
    inputs = [
        dummy if spec.kind == InputKind.USER_INPUT else _lifted_input(ep, spec.target)
        for spec in ep.graph_signature.input_specs
    ]
    recorder = _ShapeRecorder(ep.graph_module)
    try:
        with torch.no_grad():
            recorder.run(*inputs)
    except Exception as err:  # any failure here means the program cannot run at this size
        raise ModelError(
            f"the exported model was traced at input {list(traced_shape[1:])} and cannot run at "
            f"{list(input_shape)}: {_first_line(err)}"
        ) from err
    return recorder.shapes, batch


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _lifted_input(ep: ExportedProgram, target: str | None) -> object:
    if target in ep.state_dict:
        return ep.state_dict[target]
    return ep.constants.get(target)  # non-persistent buffers and lifted constants live here


class _ShapeRecorder(fx.Interpreter):
    """Runs a graph and remembers each tensor node's shape."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.shapes: Shapes = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            self.shapes[n] = tuple(result.shape)
        return result
