"""Jinja2 environment of the dashboard: number formats shared by every page, and the render helper."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from api.dashboard.nav import NAV_LINKS, active_link
from api.deps import TOKEN_COOKIE
from services.audit_verdict import THRESHOLD_SPECS
from services.specs import OPTIONS_BY_NAME

TEMPLATES = Path(__file__).parent / "templates"
# Scripts and styles only from this server (the product works offline, and a page cannot be made to load
# code from elsewhere); Plotly sets inline styles on the elements it draws, hence 'unsafe-inline' styles.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
KIND_LABELS = {
    "standard": "standard",
    "pointwise": "1×1 pointwise",
    "depthwise": "depthwise",
    "grouped": "grouped",
    "dilated": "dilated",
    "transposed": "transposed",
}


def pct(value: float | None, digits: int = 1) -> str:
    """0.984 → "98.4 %"; None (or NaN) → "—"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * value:.{digits}f} %"


def eps255(value: float | None) -> str:
    """ε in pixel units as a fraction of 255: 0.0313725 → "8/255", 0.00196 → "0.5/255"."""
    if value is None:
        return "—"
    scaled = round(value * 255, 2)
    return f"{scaled:g}/255"


def fixed(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def si(value: float | None) -> str:
    """2507392 → "2.51 M": parameter and MAC counts at a glance."""
    if value is None:
        return "—"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value:g}"


def thousands(value: int | None) -> str:
    return "—" if value is None else f"{value:,}".replace(",", " ")


def when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def day(moment: datetime | None) -> str:
    return "—" if moment is None else when(moment)[:10]


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "—"
    seconds = max((end - start).total_seconds(), 0.0)
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def pair(value: Any) -> str:
    """[3, 3] → "3×3"; a scalar as is."""
    if isinstance(value, (list, tuple)):
        return "×".join(str(part) for part in value)
    return "—" if value is None else str(value)


def _nav(request: Request) -> dict[str, Any]:
    return {
        "nav_links": NAV_LINKS,
        "active_link": active_link(request.url.path),
        "signed_in": request.app.state.auth_required and bool(request.cookies.get(TOKEN_COOKIE)),
    }


templates = Jinja2Templates(directory=TEMPLATES, context_processors=[_nav])
templates.env.filters.update(
    pct=pct,
    eps255=eps255,
    fixed=fixed,
    si=si,
    thousands=thousands,
    when=when,
    pair=pair,
    day=day,
    kind_label=lambda kind: KIND_LABELS.get(kind, kind),
)
# the declared catalogues: labels, help, choices and units of the evaluation options and the audit thresholds
templates.env.globals.update(duration=duration, options=OPTIONS_BY_NAME, threshold_specs=THRESHOLD_SPECS)


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    """The template `name` as an HTML response with the dashboard's security headers."""
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }
    return templates.TemplateResponse(request, name, context or {}, status_code=status_code, headers=headers)
