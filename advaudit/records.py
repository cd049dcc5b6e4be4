"""Record local runs (`advaudit demo`) in the service's database, so `advaudit serve` shows them."""

from __future__ import annotations

import socket
from pathlib import Path

from api.services.datasets import ensure_builtin_datasets
from contracts.settings import get_settings
from db import migrate
from db import repositories as repo
from db.session import make_engine, make_session_factory, session_scope
from db.storage import open_store
from services.checkpoints import demo_model_path
from worker.runner import WorkerContext, record_results

LOCAL_QUEUE = "local"


class LocalRecorder:
    """Writes finished local evaluations as succeeded jobs, through the same code the worker uses."""

    def __init__(self) -> None:
        settings = get_settings()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate.upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        self.context = WorkerContext(
            sessions=make_session_factory(engine),
            store=open_store(settings),
            host=f"{socket.gethostname()}:local",
        )
        self.data_dir = settings.data_dir
        ensure_builtin_datasets(self.context.sessions)

    def record_demo(self, name: str, document: dict, report_dir: Path) -> int:
        """Register demo model `name` (once per checkpoint) and a succeeded job holding `report_dir`."""
        key, sha256, size = self.context.store.put_file(demo_model_path(name))
        info = document["model"]
        with session_scope(self.context.sessions) as session:
            model = repo.models.find_by_sha256(session=session, sha256=sha256, name=name)
            if model is None:
                model = repo.models.create(
                    session=session,
                    name=name,
                    sha256=sha256,
                    format=info["format"],
                    num_classes=info["num_classes"],
                    input_shape=info["input_shape"],
                    storage_key=key,
                    size_bytes=size,
                    arch=info["arch"],
                    class_names=document["dataset"]["class_names"],
                )
            dataset = repo.datasets.get_by_name(session=session, name="digits")
            job = repo.jobs.create(
                session=session,
                model_id=model.id,
                dataset_id=dataset.id,
                config=document["config"],
                queue=LOCAL_QUEUE,
            )
            job_id = job.id
        with session_scope(self.context.sessions) as session:
            attempt = repo.jobs.claim(session=session, job_id=job_id, worker_host=self.context.host).attempts
        record_results(self.context, job_id, attempt, document, report_dir)
        return job_id
