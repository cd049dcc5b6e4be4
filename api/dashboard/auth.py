"""Dashboard sign-in: the token is asked for once and kept in an HttpOnly, SameSite cookie."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from starlette.responses import RedirectResponse, Response

from api.dashboard.errors import LoginRequired, PageError
from api.dashboard.templating import render
from api.deps import TOKEN_COOKIE, SessionDep, presented_token, valid_token
from api.origin import is_cross_site

COOKIE_MAX_AGE_S = 30 * 24 * 3600
MAX_TOKEN_CHARS = 512

router = APIRouter(include_in_schema=False)


def _signed_in(request: Request, session: SessionDep) -> bool:
    plaintext = presented_token(request, None)
    return valid_token(session, plaintext) is not None


def require_page_token(request: Request, session: SessionDep) -> None:
    """Pages: without a valid token (auth on), the browser is sent to the login page."""
    if request.app.state.auth_required and not _signed_in(request, session):
        raise LoginRequired()


def require_fragment_token(request: Request, session: SessionDep) -> None:
    """Parts a script fetches (report section, CAM images): 401 rather than a redirect to a login page."""
    if request.app.state.auth_required and not _signed_in(request, session):
        raise PageError(
            HTTPStatus.UNAUTHORIZED, "Your sign-in has expired: reload the page to sign in again."
        )


def same_origin(request: Request) -> None:
    """Form posts must come from our own pages: a cross-site form cannot submit jobs or sign people in."""
    if is_cross_site(request):
        raise PageError(HTTPStatus.FORBIDDEN, "This form was posted from another site and was refused.")


PageAuth = Depends(require_page_token)
FragmentAuth = Depends(require_fragment_token)
SameOrigin = Depends(same_origin)


def safe_next(target: str | None) -> str:
    """Only a path on this server (never //host or a scheme): the login form cannot redirect elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login")
def login_page(request: Request, session: SessionDep, next: str | None = None) -> Response:
    if not request.app.state.auth_required or _signed_in(request, session):
        return RedirectResponse(safe_next(next), status_code=HTTPStatus.SEE_OTHER)
    return render(request, "login.html", {"next": safe_next(next), "error": None, "hide_signout": True})


@router.post("/login", dependencies=[SameOrigin])
def login(
    request: Request,
    session: SessionDep,
    token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Check the token; on success keep it in the cookie and go on to the page that asked for it."""
    plaintext = token.strip()
    if not plaintext or len(plaintext) > MAX_TOKEN_CHARS:
        error = "Paste a token: `advaudit token create NAME` on the server prints one."
    elif valid_token(session, plaintext) is None:
        error = "That token is invalid or was revoked; create a new one with `advaudit token create NAME`."
    else:
        response = RedirectResponse(safe_next(next), status_code=HTTPStatus.SEE_OTHER)
        # Lax: the cookie rides on top-level links from elsewhere (a shared job URL opens directly) but on
        # no cross-site POST or fetch, and every state change here is a POST.
        response.set_cookie(
            TOKEN_COOKIE,
            plaintext,
            max_age=COOKIE_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response
    return render(
        request,
        "login.html",
        {"next": safe_next(next), "error": error, "hide_signout": True},
        status_code=HTTPStatus.UNAUTHORIZED,
    )


@router.post("/logout", dependencies=[SameOrigin])
def logout(request: Request) -> Response:
    response = RedirectResponse(
        "/login" if request.app.state.auth_required else "/", status_code=HTTPStatus.SEE_OTHER
    )
    response.delete_cookie(TOKEN_COOKIE, path="/", httponly=True, samesite="lax")
    return response
