"""The dashboard: server-rendered pages over the service's data, charts drawn by Plotly from our server."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api.dashboard import (
    audit_form,
    audit_pages,
    auth,
    compare_page,
    evaluation_form,
    pages,
    transfer_pages,
)
from api.dashboard.errors import install_error_pages

STATIC = Path(__file__).parent / "static"
STATIC_PREFIX = "/static"
PLOTLY_URL = f"{STATIC_PREFIX}/vendor/plotly.min.js"


def plotly_bundle() -> Path:
    """plotly.min.js as the `plotly` Python package ships it (found without importing the package)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the dashboard needs the `plotly` package for its bundled plotly.min.js; pip install plotly"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall the `plotly` package")
    return path


def install(app: FastAPI) -> None:
    """Add the pages, their static files (Plotly included) and HTML error pages to `app`."""
    bundle = plotly_bundle()

    @app.get(PLOTLY_URL, include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(
            bundle, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"}
        )

    # audit_form before audit_pages: /audits/new must match before /audits/{audit_id}.
    # transfer_pages declares /transfers/new before /transfers/{transfer_id}.
    for module in (auth, pages, evaluation_form, compare_page, audit_form, audit_pages, transfer_pages):
        app.include_router(module.router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC), name="static")
    install_error_pages(app)
