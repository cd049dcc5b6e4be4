"""The one exception-to-HTTP mapping: every error leaves as RFC 9457 problem+json."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from db.errors import RecordInUse, StaleJob
from db.file_cache import CacheTooSmall, CorruptObject
from db.storage import ReferenceRefused, StoreUnavailable
from services.errors import AdvauditError, CheckpointError, ConfigError, DatasetError, ModelError
from services.job_states import InvalidTransition

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    """An error raised by the API layer itself; `status` picks the HTTP code, `detail` is for the user."""

    status = HTTPStatus.BAD_REQUEST

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        self.extra = extra


class BadRequest(ApiError):
    status = HTTPStatus.BAD_REQUEST


class Unauthorized(ApiError):
    status = HTTPStatus.UNAUTHORIZED


class Forbidden(ApiError):
    status = HTTPStatus.FORBIDDEN


class NotFound(ApiError):
    status = HTTPStatus.NOT_FOUND


class Conflict(ApiError):
    status = HTTPStatus.CONFLICT


class PayloadTooLarge(ApiError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(ApiError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class Unprocessable(ApiError):
    status = HTTPStatus.UNPROCESSABLE_ENTITY


class ServiceUnavailable(ApiError):
    status = HTTPStatus.SERVICE_UNAVAILABLE


# Domain and persistence errors, most specific first: (exception type, status).
DOMAIN_STATUS: tuple[tuple[type[Exception], HTTPStatus], ...] = (
    (ConfigError, HTTPStatus.UNPROCESSABLE_ENTITY),
    (DatasetError, HTTPStatus.UNPROCESSABLE_ENTITY),
    (CheckpointError, HTTPStatus.UNPROCESSABLE_ENTITY),
    (ModelError, HTTPStatus.UNPROCESSABLE_ENTITY),
    (ReferenceRefused, HTTPStatus.UNPROCESSABLE_ENTITY),
    (StoreUnavailable, HTTPStatus.SERVICE_UNAVAILABLE),
    (CacheTooSmall, HTTPStatus.INSUFFICIENT_STORAGE),
    (CorruptObject, HTTPStatus.BAD_GATEWAY),
    (RecordInUse, HTTPStatus.CONFLICT),
    (InvalidTransition, HTTPStatus.CONFLICT),
    (StaleJob, HTTPStatus.CONFLICT),
    (AdvauditError, HTTPStatus.BAD_REQUEST),
)


def problem(
    status: int,
    detail: str,
    *,
    request: Request | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response (RFC 9457); `extra` adds extension members such as `errors`."""
    body = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _api_error(request: Request, error: ApiError) -> JSONResponse:
    return problem(error.status, error.detail, request=request, headers=error.headers, **error.extra)


def _domain_error(request: Request, error: Exception) -> JSONResponse:
    status = next(code for kind, code in DOMAIN_STATUS if isinstance(error, kind))
    return problem(status, str(error), request=request)


def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    errors = [
        {
            "loc": [str(part) for part in item.get("loc", ())],
            "msg": str(item.get("msg", "")),
            "type": str(item.get("type", "")),
        }
        for item in error.errors()
    ]
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5]) or "invalid request"
    return problem(HTTPStatus.UNPROCESSABLE_ENTITY, detail, request=request, errors=errors)


def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    detail = error.detail if isinstance(error.detail, str) else HTTPStatus(error.status_code).phrase
    if error.status_code == HTTPStatus.NOT_FOUND and detail == "Not Found":
        detail = f"no such endpoint: {request.method} {request.url.path}"
    return problem(error.status_code, detail, request=request, headers=getattr(error, "headers", None))


def _integrity_error(request: Request, error: IntegrityError) -> JSONResponse:
    # Usually a race on a unique name/version; the database's own text may leak schema details.
    log.info("integrity error on %s: %s", request.url.path, error.orig)
    return problem(
        HTTPStatus.CONFLICT,
        "the request conflicts with an existing record (a duplicate name or a concurrent change); retry it",
        request=request,
    )


def _database_unavailable(request: Request, error: OperationalError) -> JSONResponse:
    log.error("database error on %s: %s", request.url.path, error.orig)
    return problem(
        HTTPStatus.SERVICE_UNAVAILABLE, "the database is unavailable; retry shortly", request=request
    )


def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return problem(
        HTTPStatus.INTERNAL_SERVER_ERROR,
        "internal server error; the details are in the server log",
        request=request,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register every mapping above on `app`."""
    app.add_exception_handler(ApiError, _api_error)
    for kind, _ in DOMAIN_STATUS:
        app.add_exception_handler(kind, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
