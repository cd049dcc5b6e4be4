"""What every dataset format hands back: its DatasetInfo and a Reader for its inputs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class DatasetInfo:
    """What was loaded and how to recognise it again."""

    source: str
    format: str  # "digits" | "npz" | "imagefolder-dir" | "imagefolder-zip"
    sha256: str
    num_samples: int
    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "source": self.source,
            "format": self.format,
            "sha256": self.sha256,
            "num_samples": self.num_samples,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names) if self.class_names is not None else None,
        }


class Reader:
    """Reads inputs as float32 (B, C, H, W) tensors; subclasses stream them from memory, an .npz or images."""

    def iter_batches(self, count: int, batch_size: int, start: int = 0) -> Iterator[torch.Tensor]:
        """Rows start … count − 1 in batches of `batch_size`."""
        raise NotImplementedError

    def read(self, indices: list[int]) -> torch.Tensor:
        """Rows at sorted, unique indices, in that order."""
        raise NotImplementedError
