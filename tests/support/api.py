"""Builders for API tests: upload calls, small datasets, demo and hostile files, a finished job, the enqueue
and broker fakes, auth clients and tokens, and the checks that a bad upload was refused cleanly."""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from db import repositories as repo
from db.session import session_scope
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


class RecordingEnqueue:
    """Stands in for the Celery client: remembers the job ids it was asked to send."""

    def __init__(self) -> None:
        self.job_ids: list[int] = []
        self.on_send = None  # optional callable(job), run before recording

    def __call__(self, job) -> None:
        if self.on_send is not None:
            self.on_send(job)
        self.job_ids.append(job.id)


class FakeBroker:
    """Answers health probes with a reachable broker and one worker; sending is the enqueue fake's job."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def send(self, job) -> None:  # pragma: no cover - create_app gets its own enqueue in these tests
        raise AssertionError("tests pass a recording enqueue")

    def launch_audit_run(self, run_id: int) -> None:  # pragma: no cover - audit tests record launches
        raise AssertionError("audit tests set app.state.audit_dispatch")

    def status(self) -> dict:
        names = [f"worker{i}@test" for i in range(self.workers)]
        return {
            "broker": {"ok": True, "error": None},
            "workers": {"count": self.workers, "names": names, "error": None},
        }


def auth_client(settings, enqueue, mode: str, host: str | None) -> TestClient:
    """A client of an app with auth `mode` that listens on `host` (None: unknown)."""
    settings = settings.model_copy(update={"auth": mode})
    return TestClient(create_app(settings, enqueue=enqueue, broker=FakeBroker(), listen_host=host))


def make_token(client: TestClient, name: str = "ci") -> str:
    """A new API token, created straight in the database of the client's app."""
    with session_scope(client.app.state.sessions) as session:
        return repo.tokens.create_token(session=session, name=name)


def upload_snapshot(client, app) -> tuple:
    """(models, datasets, stored files): what a refused upload must leave unchanged."""
    models = client.get(f"{API}/models").json()["count"]
    datasets = client.get(f"{API}/datasets").json()["count"]
    return models, datasets, stored_files(app.state.store.root)


def assert_refused(client, app, response, status: int, *phrases: str, before: tuple) -> None:
    """A 4xx problem+json naming `phrases`, nothing stored or left in uploads/, and the server still healthy."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and problem["title"]
    for phrase in phrases:
        assert phrase in problem["detail"], problem["detail"]
    assert "Traceback" not in problem["detail"]
    assert upload_snapshot(client, app) == before, "a refused upload must leave no row and no stored file"
    assert leftover_uploads(app.state.settings.data_dir) == [], "temporary upload left behind"
    assert client.get(f"{API}/health").status_code == 200
