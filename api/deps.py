"""Dependencies: one session per request, settings, the artifact store, auth, and 404-raising loaders."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.broker import Broker
from api.errors import Forbidden, NotFound, Unauthorized
from api.origin import SAFE_METHODS, is_cross_site
from api.schemas import MAX_ID
from contracts.settings import Settings
from db import repositories as repo
from db.models import ApiToken, Audit, DatasetRecord, Job, ModelRecord, TransferJob
from db.session import session_scope
from db.storage import ArtifactStore


def get_session(request: Request) -> Iterator[Session]:
    """A session for this request: committed when the handler returns, rolled back if it raises."""
    with session_scope(request.app.state.sessions) as session:
        yield session


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> ArtifactStore:
    return request.app.state.store


def get_broker(request: Request) -> Broker:
    return request.app.state.broker


def get_enqueue(request: Request) -> Callable[[Job], None]:
    return request.app.state.enqueue


def get_enqueue_transfer(request: Request) -> Callable[[TransferJob], None]:
    return request.app.state.enqueue_transfer


def get_audit_dispatch(request: Request) -> Callable[[int], None]:
    """Enqueues the launch of an audit run (the broker's, unless a test replaced app.state.audit_dispatch)."""
    return request.app.state.audit_dispatch


# scope="function": the commit runs before the response is sent, so a client never sees an uncommitted write.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
BrokerDep = Annotated[Broker, Depends(get_broker)]
EnqueueDep = Annotated[Callable[[Job], None], Depends(get_enqueue)]
EnqueueTransferDep = Annotated[Callable[[TransferJob], None], Depends(get_enqueue_transfer)]
DispatchDep = Annotated[Callable[[int], None], Depends(get_audit_dispatch)]

_bearer = HTTPBearer(auto_error=False, description="a token from `advaudit token create NAME`")


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]

# The dashboard keeps the token in this HttpOnly cookie, so the browser's own fetches authenticate too.
TOKEN_COOKIE = "advaudit_token"


def presented_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The bearer header's token, else the dashboard cookie's; None when neither carries one."""
    if credentials is not None and credentials.credentials.strip():
        return credentials.credentials.strip()
    cookie = request.cookies.get(TOKEN_COOKIE, "").strip()
    return cookie or None


def valid_token(session: Session, plaintext: str | None) -> ApiToken | None:
    """The live token whose plaintext this is, or None."""
    return None if plaintext is None else repo.tokens.verify(session=session, plaintext=plaintext)


def require_token(request: Request, session: SessionDep, credentials: BearerDep) -> ApiToken | None:
    """The caller's token when auth is on (401 without a valid one); None when auth is off."""
    if not request.app.state.auth_required:
        return None
    plaintext = presented_token(request, credentials)
    if plaintext is None:
        raise Unauthorized(
            "authentication required: send 'Authorization: Bearer <token>' "
            "(create a token with `advaudit token create NAME`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = valid_token(session, plaintext)
    if token is None:
        raise Unauthorized(
            "invalid or revoked bearer token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    return token


AuthDep = Annotated[ApiToken | None, Depends(require_token)]


def refuse_cross_site(request: Request) -> None:
    """403 for a state-changing request from a page of another site (CSRF via the cookie, or with auth off)."""
    if request.method not in SAFE_METHODS and is_cross_site(request):
        raise Forbidden(
            "cross-site request refused: this API changes state only for requests from the "
            "dashboard's own pages or from clients that are not browsers (curl, the CLI)"
        )


def get_model(session: SessionDep, model_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> ModelRecord:
    model = repo.models.get(session=session, model_id=model_id)
    if model is None:
        raise NotFound(f"model {model_id} does not exist")
    return model


def get_dataset(session: SessionDep, dataset_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> DatasetRecord:
    dataset = repo.datasets.get(session=session, dataset_id=dataset_id)
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    return dataset


def get_job(session: SessionDep, job_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> Job:
    job = repo.jobs.get(session=session, job_id=job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


def get_audit(session: SessionDep, audit_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> Audit:
    audit = repo.audits.get(session=session, audit_id=audit_id)
    if audit is None:
        raise NotFound(f"audit {audit_id} does not exist")
    return audit


ModelDep = Annotated[ModelRecord, Depends(get_model)]
AuditDep = Annotated[Audit, Depends(get_audit)]
DatasetDep = Annotated[DatasetRecord, Depends(get_dataset)]
JobDep = Annotated[Job, Depends(get_job)]


def get_transfer(session: SessionDep, transfer_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> TransferJob:
    transfer = repo.transfers.get(session=session, transfer_id=transfer_id)
    if transfer is None:
        raise NotFound(f"transfer job {transfer_id} does not exist")
    return transfer


TransferDep = Annotated[TransferJob, Depends(get_transfer)]
