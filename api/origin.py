"""Whether a browser sent a request from a page of another site (the rule behind every CSRF refusal)."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_cross_site(request: Request) -> bool:
    """True when the browser marks the request as coming from another origin.

    Sec-Fetch-Site (every current browser) is trusted first, then Origin. A request with neither header
    is not a browser's (curl, the CLI, scripts): those authenticate with a bearer token, which a page of
    another site cannot attach. SameSite=Lax cookies alone do not stop a sibling subdomain or another
    port of the same host, so the dashboard's cookie needs this check on every request that changes state.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return origin == "null" or urlsplit(origin).netloc != request.headers.get("host", "")
