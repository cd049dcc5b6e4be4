"""The new-audit form: it submits through the same use case as POST /api/v1/audits."""

from __future__ import annotations

import functools
import re
import zoneinfo
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from api.audit_schemas import AuditCreate, AuditThresholds
from api.dashboard import evaluation_form
from api.dashboard.auth import PageAuth, SameOrigin
from api.dashboard.templating import render
from api.deps import SessionDep, SettingsDep, StoreDep
from api.errors import ApiError
from api.services import audit_pages as views
from api.services import audits as audit_service
from api.services import dashboard as dashboard_views
from services.errors import AdvauditError

router = APIRouter(include_in_schema=False)

THRESHOLDS = {  # form field: (label, unit): the largest change allowed before a run counts as regressed
    "clean_accuracy_drop_pp": ("Clean accuracy drop", "pp"),
    "accuracy_drop_pp": ("FGSM accuracy drop", "pp at each ε"),
    "robust_auc_drop_pp": ("Robust AUC drop", "pp"),
    "target_success_rise_pp": ("Target success rise", "pp at each targeted ε"),
    "cam_drift_rise": ("CAM drift rise", "drift (1 − correlation)"),
}
DEFAULTS = {**evaluation_form.DEFAULTS, "cam": "none", "name": "", "selector": "name", "model_name": "",
            "dataset_id": "", "schedule": "cron", "cron": "0 3 * * *", "timezone": "UTC", "interval": "1d",
            "baseline_job_id": "", "webhook_url": "",
            **{key: f"{AuditThresholds.model_fields[key].default:g}" for key in THRESHOLDS}}
LABELS = {**evaluation_form.LABELS, "name": "Name", "model_name": "Model name", "model_ids": "Models",
          "cron": "Cron", "timezone": "Time zone", "interval_s": "Interval", "baseline_job_id": "Baseline",
          "webhook_url": "Webhook URL", "enabled": "Enabled", "run_on_new_version": "Run on new versions",
          **{key: label for key, (label, _) in THRESHOLDS.items()}}
FLAGS = (*evaluation_form.FLAGS, "enabled", "run_on_new_version")
INTERVAL = re.compile(r"^\s*(\d{1,9})\s*(s|m|min|h|d)?\s*$")
INTERVAL_UNITS = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


@functools.cache
def time_zones() -> list[str]:
    return sorted(zoneinfo.available_timezones())


def interval_seconds(text: str) -> int | None:
    """"3600", "90s", "15m", "6h", "1d" → seconds; None when the text is no such duration."""
    match = INTERVAL.match(text)
    return None if match is None else int(match.group(1)) * INTERVAL_UNITS[match.group(2)]


def audit_request(values: dict[str, str], model_ids: list[str], flags: set[str]) -> tuple[dict[str, Any], list[str]]:
    """The POST /audits body the form describes, and what the form itself cannot turn into one."""
    problems: list[str] = []
    body: dict[str, Any] = {
        "name": values["name"].strip(), "dataset_id": values["dataset_id"],
        "config": evaluation_form._job_request(values, flags)["config"],  # the evaluation form's own parsing
        # An emptied threshold is not checked (null), as in the API.
        "thresholds": {key: values[key].strip() or None for key in THRESHOLDS},
        "baseline_job_id": values["baseline_job_id"] or None, "webhook_url": values["webhook_url"].strip() or None,
        "enabled": "enabled" in flags, "run_on_new_version": "run_on_new_version" in flags}
    if values["selector"] == "ids":
        body["model_ids"] = model_ids
        if not model_ids:
            problems.append("Models: tick at least one model, or choose a model name")
    else:
        body["model_name"] = values["model_name"]
    if values["schedule"] == "cron":
        body["cron"], body["timezone"] = values["cron"], values["timezone"].strip() or None
    elif values["schedule"] == "interval":
        body["interval_s"] = interval_seconds(values["interval"])
        if body["interval_s"] is None:
            problems.append(f"Interval: {values['interval']!r} is not a duration such as 3600, 90s, 15m, 6h or 1d")
    return body, problems


def _messages(error: ValidationError) -> list[str]:
    messages = []
    for item in error.errors(include_url=False):
        field = next((str(part) for part in reversed(item["loc"]) if str(part) in LABELS), None)
        label = LABELS.get(field, "Form") if field else "Form"
        if item.get("input") == "":
            messages.append(f"{label}: choose or enter a value")
        elif item["type"] == "string_pattern_mismatch":  # the regular expression would mean nothing to a reader
            messages.append(f"{label}: contains a character that is not allowed here (/, \\ or a control character)")
        else:
            messages.append(f"{label}: {item['msg'].removeprefix('Value error, ')}")
    return messages


def _form(request: Request, session, values: dict[str, str], model_ids: list[str], flags: set[str],
          errors: list[str], status: int = HTTPStatus.OK) -> Response:
    return render(request, "audit_form.html", {
        "values": values, "model_ids": set(model_ids), "flags": flags, "errors": errors,
        "models": dashboard_views.models(session=session), "model_names": views.newest_versions(session=session),
        "datasets": dashboard_views.datasets(session=session), "jobs": dashboard_views.succeeded_jobs(session=session),
        "target_policies": evaluation_form.TARGET_POLICIES, "time_zones": time_zones(), "thresholds": THRESHOLDS,
    }, status_code=status)


# Registered before /audits/{audit_id} (see api.dashboard.install), so "new" is never read as an audit id.
@router.get("/audits/new", dependencies=[PageAuth])
def new_audit(request: Request, session: SessionDep) -> Response:
    values = dict(DEFAULTS)
    for key in ("model_name", "dataset_id"):  # preselected by links of other pages
        values[key] = request.query_params.get(key, "")
    return _form(request, session, values, [], {"enabled"}, [])


@router.post("/audits/new", dependencies=[PageAuth, SameOrigin])
async def submit_audit(request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep) -> Response:
    """Create the audit and go to its page; any bad value comes back as a message on the form."""
    form = await request.form()
    values = {key: str(form.get(key, "")) for key in DEFAULTS}
    model_ids = [str(value) for value in form.getlist("model_ids")]
    flags = {flag for flag in FLAGS if form.get(flag)}
    # Creating may check a CAM layer in a child process: keep that off the event loop.
    return await run_in_threadpool(_submit, request, session, store, settings, values, model_ids, flags)


def _submit(request: Request, session, store, settings, values: dict[str, str], model_ids: list[str],
            flags: set[str]) -> Response:
    body, problems = audit_request(values, model_ids, flags)
    if problems:
        return _form(request, session, values, model_ids, flags, problems, HTTPStatus.UNPROCESSABLE_ENTITY)
    try:
        audit = audit_service.create_audit(session=session, store=store, settings=settings,
                                           body=AuditCreate.model_validate(body))
    except ValidationError as error:
        return _form(request, session, values, model_ids, flags, _messages(error), HTTPStatus.UNPROCESSABLE_ENTITY)
    except (ApiError, AdvauditError) as error:
        status = error.status if isinstance(error, ApiError) else HTTPStatus.UNPROCESSABLE_ENTITY
        return _form(request, session, values, model_ids, flags, [str(error)], status)
    return RedirectResponse(f"/audits/{audit.id}", status_code=HTTPStatus.SEE_OTHER)
