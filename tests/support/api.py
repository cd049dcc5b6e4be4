"""Builders for API tests: upload calls, small datasets, demo and hostile files, and a finished job."""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from PIL import Image

from services.checkpoints import demo_model_path

API = "/api/v1"
OCTETS = "application/octet-stream"


def upload_model(client, name: str, data: bytes, filename: str = "model.pt", **fields):
    form = {"name": name, **{key: str(value) for key, value in fields.items()}}
    return client.post(f"{API}/models", data=form, files={"file": (filename, data, OCTETS)})


def upload_dataset(client, name: str, data: bytes, filename: str = "data.npz", **fields):
    form = {"name": name, **{key: str(value) for key, value in fields.items()}}
    return client.post(f"{API}/datasets", data=form, files={"file": (filename, data, OCTETS)})


def npz_bytes(n: int = 16, shape=(1, 32, 32), classes: int = 10, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), dtype=np.float32)
    y = np.arange(n, dtype=np.int64) % classes
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def png_bytes(size: int = 8, value: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_folder_zip(members: dict[str, bytes] | None = None) -> bytes:
    """An ImageFolder zip (two classes of 8×8 PNGs) or a zip of exactly `members`."""
    members = members or {
        f"{label}/{i}.png": png_bytes(value=40 * i) for label in ("a", "b") for i in range(3)
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_bomb() -> bytes:
    """20 MiB of zeros that deflate to ~20 KiB: a member far beyond the loader's bomb ratio."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/0.png", png_bytes())
        archive.writestr("b/bomb.png", bytes(20 * 1024 * 1024))
    return buffer.getvalue()


def demo_bytes(name: str) -> bytes:
    return demo_model_path(name).read_bytes()


def demo_safetensors(name: str = "gap-cnn") -> bytes:
    """The demo model's weights as .safetensors (hookable once loaded with arch=name)."""
    state = torch.jit.load(str(demo_model_path(name)), map_location="cpu").state_dict()
    return safetensors.torch.save({key: value.contiguous() for key, value in state.items()})


class Payload:
    """Unpickling this creates `marker`: proof that a loader ran attacker-controlled pickle code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def stored_files(root: Path) -> list[Path]:
    """Every object in the artifact store (its `.incoming` scratch folder excluded)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and ".incoming" not in p.parts)


def leftover_uploads(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "uploads").glob("*")) if (data_dir / "uploads").exists() else []


def run_job(app, job_id: int) -> str | None:
    """Run a queued job in-process, as a worker would (tests may import the worker)."""
    from worker.runner import WorkerContext
    from worker.runner import run_job as worker_run_job

    context = WorkerContext(
        sessions=app.state.sessions,
        store=app.state.store,
        device="cpu",
        progress_interval_s=0.0,
        lease_s=None,
    )
    return worker_run_job(job_id, context)


def hang(request, connection) -> None:
    """A validation target that never answers (stands in for a hostile file that hangs the loader)."""
    time.sleep(60)


def crash(request, connection) -> None:
    """A validation target that dies like a segfaulting loader."""
    os.abort()
