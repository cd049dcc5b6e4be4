"""Rows and files for worker tests: the shipped demo model, built-in digits, models that fail mid-evaluation."""

from __future__ import annotations

from pathlib import Path

import torch
from sqlalchemy.orm import Session
from torch import nn

from db import repositories as repo
from db.models import DatasetRecord, ModelRecord
from db.storage import ArtifactStore
from services.checkpoints import demo_model_path, load_model
from services.datasets import load_dataset

INPUT_SHAPE = (1, 32, 32)
FORWARD_ERROR = "forward refuses batches larger than 2"
NAN_ERROR = "NaN or infinite logits"


def add_model_file(
    session: Session,
    store: ArtifactStore,
    path: Path,
    name: str,
    fmt: str = "torchscript",
    num_classes: int = 10,
) -> ModelRecord:
    """Store a checkpoint file and register it, as the API does after validating an upload."""
    key, sha256, size = store.put_file(path)
    return repo.models.create(
        session=session,
        name=name,
        sha256=sha256,
        format=fmt,
        num_classes=num_classes,
        input_shape=INPUT_SHAPE,
        storage_key=key,
        size_bytes=size,
    )


def add_demo_model(session: Session, store: ArtifactStore, name: str = "gap-cnn") -> ModelRecord:
    return add_model_file(session, store, demo_model_path(name), name)


def write_exported_demo(path: Path, name: str = "gap-cnn") -> Path:
    """The demo model as a torch.export archive (dynamic batch): hooks reach its layers, unlike TorchScript's."""
    network = load_model(f"demo:{name}", input_shape=INPUT_SHAPE).network
    batch = ({0: torch.export.Dim("batch")},)
    torch.export.save(
        torch.export.export(network, (torch.rand(2, *INPUT_SHAPE),), dynamic_shapes=batch), path
    )
    return path


def add_digits(session: Session, source: str = "digits") -> DatasetRecord:
    """The built-in digits dataset (nothing stored: the worker rebuilds it from `source`)."""
    info = load_dataset(source).info
    return repo.datasets.create(
        session=session,
        name=source,
        sha256=info.sha256,
        format="digits",
        num_samples=info.num_samples,
        input_shape=info.input_shape,
        num_classes=info.num_classes,
        class_names=info.class_names,
        source=source,
    )


class _RaisesOnBigBatches(nn.Module):
    """Passes the loader's checks (batches of 2 and 1), then raises on the sweep's larger batches."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 2:
            raise RuntimeError("forward refuses batches larger than 2")
        return self.fc(self.pool(self.conv(x)).flatten(1))


class _NanOnBigBatches(_RaisesOnBigBatches):
    """Finite logits for the loader's dummy batches, NaN for every larger batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(self.pool(self.conv(x)).flatten(1))
        if x.shape[0] > 2:
            return logits * float("nan")
        return logits


class _HangsOnBigBatches(_RaisesOnBigBatches):
    """Answers the loader's dummy batches; on any larger batch its forward never returns (a busy loop)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while x.shape[0] > 2:
            x = x + 0.0
        return self.fc(self.pool(self.conv(x)).flatten(1))


class FunctionalConv(nn.Module):
    """Its convolution is a function call on a plain parameter: no conv module holds the weight."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(6, 1, 3, 3) * 0.3)
        self.fc = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(nn.functional.conv2d(x, self.kernel, padding=1)).mean((2, 3)))


def write_functional_conv_model(path: Path) -> Path:
    """A TorchScript file of FunctionalConv (seeded)."""
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(FunctionalConv().eval()), str(path))
    return path


FAULTS = {"raises": _RaisesOnBigBatches, "nan": _NanOnBigBatches, "hangs": _HangsOnBigBatches}


def write_faulty_model(path: Path, kind: str = "raises") -> Path:
    """A TorchScript file whose forward raises (`raises`), returns NaN (`nan`) or never returns (`hangs`) on
    batches larger than 2."""
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(FAULTS[kind]().eval()), str(path))
    return path
