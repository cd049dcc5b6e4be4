"""The FastAPI application factory: `create_app(settings, enqueue=…, listen_host=…)`.

Run it with `uvicorn --factory api.main:create_app` (auth then defaults to required in "auto" mode,
since the factory cannot see the host uvicorn binds) or through `advaudit serve`, which passes the host.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from api import dashboard
from api.broker import Broker, CeleryBroker
from api.deps import refuse_cross_site, require_token
from api.errors import install_error_handlers
from api.hosts import HostGuard, host_policy, is_loopback
from api.routers import audits, compare, datasets, health, jobs, models, transfers
from api.schemas import problem_responses
from api.services.datasets import ensure_builtin_datasets
from api.services.storage import discard_stale_uploads, upload_dir
from api.services.validation import warm_up
from contracts.settings import Settings, get_settings
from db import migrate
from db.models import Job, TransferJob
from db.session import make_engine, make_session_factory
from db.storage import StoreUnavailable, open_store

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
# What any endpoint may answer: a refused Host or malformed request (400), no token (401), a cross-site
# request (403), an unknown id (404), a conflict (409), invalid input (422), the database down (503).
ERROR_RESPONSES = problem_responses(400, 401, 403, 404, 409, 422, 503)


def auth_required(mode: str, listen_host: str | None) -> bool:
    """ "required"/"off" as set; "auto": required unless the server listens on a loopback address only."""
    if mode in ("required", "off"):
        return mode == "required"
    return not is_loopback(listen_host)


def _start_up(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    migrate.upgrade(settings.database_url)
    ensure_builtin_datasets(app.state.sessions)
    upload_dir(settings).mkdir(parents=True, exist_ok=True)
    discard_stale_uploads(settings)
    try:
        app.state.store.discard_partial()
    except StoreUnavailable as error:  # object storage still starting: its leftovers wait for the next start
        log.warning("could not clean up partial writes: %s", error)
    # The validation forkserver imports torch once; start it now rather than on the first upload.
    threading.Thread(target=warm_up, name="advaudit-validation-warm-up", daemon=True).start()


def create_app(
    settings: Settings | None = None,
    *,
    enqueue: Callable[[Job], None] | None = None,
    broker: Broker | None = None,
    listen_host: str | None = None,
    enqueue_transfer: Callable[[TransferJob], None] | None = None,
) -> FastAPI:
    """The API with its engine, session factory, artifact store and task queue client on `app.state`.

    `broker` (the task-queue client: jobs, audit launches, health probes) defaults to a Celery client on
    settings.broker_url; `enqueue(job)` defaults to its `send`.
    Migrations run and `digits` is registered at start-up (the lifespan), not here.
    """
    settings = settings or get_settings()
    engine = make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(_start_up, app)
        yield
        engine.dispose()

    app = FastAPI(
        title="advaudit",
        version="1",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url=f"{API_PREFIX}/openapi.json",
        description="Adversarial robustness evaluation: register models and datasets, run FGSM / "
        "targeted FGSM sweeps with CAM and architecture audits, compare models.",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = make_session_factory(engine)
    app.state.store = open_store(settings)
    app.state.broker = broker or CeleryBroker(settings.broker_url)  # the API's one task-queue client
    app.state.enqueue = enqueue or app.state.broker.send
    # Looked up when sent, so a test broker without transfers still builds the app.
    app.state.enqueue_transfer = enqueue_transfer or (lambda job: app.state.broker.send_transfer(job))
    app.state.audit_dispatch = app.state.broker.launch_audit_run
    app.state.auth_required = auth_required(settings.auth, listen_host)
    app.state.host_policy = host_policy(
        auth_required=app.state.auth_required, allowed_hosts=settings.allowed_hosts, listen_host=listen_host
    )
    app.add_middleware(HostGuard, policy=app.state.host_policy)
    install_error_handlers(app)

    api = APIRouter(prefix=API_PREFIX, responses=ERROR_RESPONSES, dependencies=[Depends(refuse_cross_site)])
    for router in (models.router, datasets.router, jobs.router, transfers.router, compare.router):
        api.include_router(router, dependencies=[Depends(require_token)])
    api.include_router(audits.router, dependencies=[Depends(require_token)])
    api.include_router(health.router)
    app.include_router(api)
    dashboard.install(app)
    return app
