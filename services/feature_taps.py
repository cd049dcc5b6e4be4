"""Read several layers' outputs in one forward pass, stopping the pass once the last of them has run."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, suppress
from types import TracebackType
from typing import Self

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from services.cams import resolve_layer
from services.errors import ConfigError


class _AllCaptured(Exception):
    """Raised from the hook of the last layer still missing: the rest of the forward is not needed."""


class LayerTap(AbstractContextManager["LayerTap"]):
    """Forward hooks on `layers` of `network` while entered (always removed on exit).

    `run(model, x)` returns the layers' (N, C, H, W) outputs, in the order of `layers`. Each output is a clone:
    an in-place module after the layer (an in-place ReLU) cannot change what was read, and gradients flow
    through it to the input when `x` requires them.
    """

    def __init__(self, network: nn.Module, layers: Sequence[str]) -> None:
        self.layers = tuple(layers)
        self.modules = [resolve_layer(network, layer) for layer in self.layers]
        self._outputs: dict[int, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []

    def _hook(self, position: int) -> object:
        def hook(module: nn.Module, inputs: tuple[object, ...], output: object) -> None:
            layer = self.layers[position]
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                raise ConfigError(f"layer {layer!r} does not output an (N, C, H, W) map; pick a conv stage")
            if position in self._outputs:
                raise ConfigError(
                    f"layer {layer!r} runs more than once per forward; pick a module that runs once"
                )
            self._outputs[position] = output.clone()
            if len(self._outputs) == len(self.layers):
                raise _AllCaptured

        return hook

    def __enter__(self) -> Self:
        for position, module in enumerate(self.modules):
            self._handles.append(module.register_forward_hook(self._hook(position)))  # type: ignore[arg-type]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._outputs.clear()

    def run(self, model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        """The layers' outputs for input batch `x` (the forward stops after the last of them)."""
        self._outputs.clear()
        with suppress(_AllCaptured):  # the hooks stopped the forward once every layer had run
            model(x)
        missing = [self.layers[i] for i in range(len(self.layers)) if i not in self._outputs]
        if missing:
            raise ConfigError(f"layer {missing[0]!r} did not run in the model's forward pass")
        outputs = [self._outputs[i] for i in range(len(self.layers))]
        self._outputs.clear()
        return outputs
