"""GET /health: never behind auth, so load balancers and `advaudit serve` can probe it."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from api.deps import BrokerDep
from api.schemas import HealthRead
from api.services import health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthRead, responses={503: {"model": HealthRead}})
async def get_health(request: Request, response: Response, broker: BrokerDep) -> dict:
    """Database, broker and live workers; 503 when the database is unreachable."""
    document, database_ok = await run_in_threadpool(
        health.check,
        sessions=request.app.state.sessions,
        broker=broker,
        auth_required=request.app.state.auth_required,
    )
    if not database_ok:
        response.status_code = 503
    return document
