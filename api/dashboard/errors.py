"""Dashboard errors as HTML pages; API paths keep their problem+json answers."""

from __future__ import annotations

import inspect
from http import HTTPStatus
from urllib.parse import quote

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from api.dashboard.templating import render

API_PATHS = ("/api/", "/docs")


class PageError(Exception):
    """A dashboard page that cannot be shown; `detail` tells the user why and what to do."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class LoginRequired(Exception):
    """A page was asked for without a valid token while auth is on: send the browser to the login page."""


def page_not_found(what: str) -> PageError:
    return PageError(HTTPStatus.NOT_FOUND, f"{what} does not exist.")


def error_page(request: Request, status: int, detail: str) -> Response:
    return render(
        request,
        "error.html",
        {"status": status, "title": HTTPStatus(status).phrase, "detail": detail},
        status_code=status,
    )


def _page_error(request: Request, error: PageError) -> Response:
    return error_page(request, error.status, error.detail)


def _login_required(request: Request, error: LoginRequired) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=HTTPStatus.SEE_OTHER)


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith(API_PATHS) and "text/html" in request.headers.get("accept", "")


def install_error_pages(app: FastAPI) -> None:
    """HTML for dashboard errors and for unknown page addresses a browser asks for."""
    api_handler = app.exception_handlers[StarletteHTTPException]

    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == HTTPStatus.NOT_FOUND and _wants_html(request):
            return error_page(
                request,
                HTTPStatus.NOT_FOUND,
                f"There is no page at {request.url.path}. Start again from the overview.",
            )
        answer = api_handler(request, error)
        return await answer if inspect.isawaitable(answer) else answer

    app.add_exception_handler(PageError, _page_error)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(StarletteHTTPException, http_error)
