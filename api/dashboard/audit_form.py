"""The audit form: new audits through the same use case as POST /api/v1/audits, edits as PATCH /api/v1/audits/{id}."""

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

from api.audit_schemas import AuditCreate, AuditUpdate
from api.dashboard import evaluation_form
from api.dashboard.audit_pages import PageAudit
from api.dashboard.auth import PageAuth, SameOrigin
from api.dashboard.templating import render
from api.deps import SessionDep, SettingsDep, StoreDep
from api.errors import ApiError
from api.services import audit_pages as views
from api.services import audits as audit_service
from api.services import dashboard as dashboard_views
from db.models import Audit
from services.audit_verdict import THRESHOLD_SPECS
from services.errors import AdvauditError
from services.specs import OPTIONS, EvaluationConfig

router = APIRouter(include_in_schema=False)

# form field: (label, unit) of each threshold, the largest change allowed before a run counts as regressed
THRESHOLDS = {
    name: (spec.label, f"{spec.unit} {spec.where}".strip()) for name, spec in THRESHOLD_SPECS.items()
}
DEFAULTS = {
    **evaluation_form.DEFAULTS,
    "cam": "none",
    "name": "",
    "selector": "name",
    "model_name": "",
    "dataset_id": "",
    "schedule": "cron",
    "cron": "0 3 * * *",
    "timezone": "UTC",
    "interval": "1d",
    "baseline_job_id": "",
    "webhook_url": "",
    "transfer_source_ids": "",  # the multi-select's ids, comma-joined
    **{key: f"{spec.default:g}" for key, spec in THRESHOLD_SPECS.items()},
}
LABELS = {
    **evaluation_form.LABELS,
    "name": "Name",
    "model_name": "Model name",
    "model_ids": "Models",
    "cron": "Cron",
    "timezone": "Time zone",
    "interval_s": "Interval",
    "baseline_job_id": "Baseline",
    "webhook_url": "Webhook URL",
    "transfer_source_ids": "Transfer sources",
    "enabled": "Enabled",
    "run_on_new_version": "Run on new versions",
    **{key: label for key, (label, _) in THRESHOLDS.items()},
}
FLAGS = (*evaluation_form.FLAGS, "enabled", "run_on_new_version")
INTERVAL = re.compile(r"^\s*(\d{1,9})\s*(s|m|min|h|d)?\s*$")
INTERVAL_UNITS = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
# Options the audit form has no field for (the evaluation form's but save_adversarial: an audit keeps no
# adversarial examples): an edit keeps the audit's own values.
KEPT_OPTIONS = {
    option.name: option.default
    for option in OPTIONS
    if option not in evaluation_form.FORM_OPTIONS or option.name == "save_adversarial"
}


@functools.cache
def time_zones() -> list[str]:
    return sorted(zoneinfo.available_timezones())


def interval_seconds(text: str) -> int | None:
    """ "3600", "90s", "15m", "6h", "1d" → seconds; None when the text is no such duration."""
    match = INTERVAL.match(text)
    return None if match is None else int(match.group(1)) * INTERVAL_UNITS[match.group(2)]


def audit_request(
    values: dict[str, str], model_ids: list[str], flags: set[str]
) -> tuple[dict[str, Any], list[str]]:
    """The POST /audits body the form describes, and what the form itself cannot turn into one."""
    problems: list[str] = []
    body: dict[str, Any] = {
        "name": values["name"].strip(),
        "dataset_id": values["dataset_id"],
        "config": evaluation_form.job_request(values, flags)["config"],  # the evaluation form's own parsing
        # An emptied threshold is not checked (null), as in the API.
        "thresholds": {key: values[key].strip() or None for key in THRESHOLDS},
        "baseline_job_id": values["baseline_job_id"] or None,
        "webhook_url": values["webhook_url"].strip() or None,
        "enabled": "enabled" in flags,
        "run_on_new_version": "run_on_new_version" in flags,
        # always sent, so that deselecting every source on the edit form clears them
        "transfer_source_ids": [item for item in values["transfer_source_ids"].split(",") if item],
    }
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
            problems.append(
                f"Interval: {values['interval']!r} is not a duration such as 3600, 90s, 15m, 6h or 1d"
            )
    return body, problems


def _form(
    request: Request,
    session,
    values: dict[str, str],
    model_ids: list[str],
    flags: set[str],
    errors: list[str],
    status: int = HTTPStatus.OK,
    audit: Audit | None = None,
) -> Response:
    """The form, blank for a new audit or for editing `audit` (its action and wording change)."""
    return render(
        request,
        "audit_form.html",
        {
            "other_options": tuple(
                option for option in evaluation_form.OTHER_OPTIONS if option.name not in KEPT_OPTIONS
            ),
            "values": values,
            "model_ids": set(model_ids),
            "flags": flags,
            "errors": errors,
            "audit": audit,
            "models": dashboard_views.models(session=session),
            "model_names": views.newest_versions(session=session),
            "datasets": dashboard_views.datasets(session=session),
            "jobs": dashboard_views.succeeded_jobs(session=session),
            "target_policies": evaluation_form.TARGET_POLICIES,
            "time_zones": time_zones(),
            "thresholds": THRESHOLDS,
        },
        status_code=status,
    )


def number_text(value: float) -> str:
    """5.0 → "5", 0.1 → "0.1": short, yet read back as the same number."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def eps_text(value: float) -> str:
    """8/255 → "8/255" when ε is exactly a whole number of 255ths (as typed, usually), else the number itself."""
    steps = round(value * 255)
    if steps / 255 == value:
        return f"{steps}/255" if steps else "0"
    return number_text(value)


def interval_text(seconds: int) -> str:
    """86400 → "1d", 21600 → "6h", 900 → "15m", 90 → "90s": what interval_seconds reads back."""
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _config_values(config: dict[str, Any]) -> dict[str, str]:
    """The evaluation fields of the form for a stored EvaluationConfig dict (options it lacks: their defaults)."""
    config = {**EvaluationConfig().to_dict(), **config}
    policy, _, target_class = (config.get("targeted") or "").partition(":")
    targeted_eps = config.get("targeted_eps")
    return {
        "eps": ",".join(map(eps_text, config["eps"])),
        "targeted": policy,
        "target_class": target_class or DEFAULTS["target_class"],
        "targeted_eps": ""
        if targeted_eps in (None, config["eps"])
        else ",".join(map(eps_text, targeted_eps)),
        "cam": config["cam"],
        "cam_eps": eps_text(config["cam_eps"]),
        "limit": "" if config["limit"] is None else str(config["limit"]),
        **{key: str(config[key]) for key in ("cam_samples", "device", "precision", "batch_size", "seed")},
    }


def audit_values(audit: Audit) -> tuple[dict[str, str], list[str], set[str]]:
    """The form's values, ticked model ids and flags that describe `audit` as it is now."""
    thresholds = audit.thresholds or {}
    values = {
        **DEFAULTS,
        **_config_values(audit.config),
        "name": audit.name,
        "selector": "name" if audit.model_name is not None else "ids",
        "model_name": audit.model_name or "",
        "dataset_id": str(audit.dataset_id),
        "baseline_job_id": str(audit.baseline_job_id or ""),
        "webhook_url": audit.webhook_url or "",
        "transfer_source_ids": ",".join(str(model_id) for model_id in audit.transfer_source_ids or []),
        **{key: "" if thresholds.get(key) is None else number_text(thresholds[key]) for key in THRESHOLDS},
    }
    if audit.cron is not None:
        values.update(schedule="cron", cron=audit.cron, timezone=audit.timezone or "")
    elif audit.interval_s is not None:
        values.update(schedule="interval", interval=interval_text(audit.interval_s))
    else:
        values["schedule"] = "none"
    flags = {flag for flag in ("enabled", "run_on_new_version") if getattr(audit, flag)}
    flags |= {flag for flag in evaluation_form.FLAGS if audit.config.get(flag)}
    return values, [str(model_id) for model_id in audit.model_ids or []], flags


def update_request(audit: Audit, body: dict[str, Any]) -> dict[str, Any]:
    """The PATCH body for a whole form: the schedule kind and selector not chosen are cleared."""
    config = {
        **body["config"],
        **{key: audit.config.get(key, default) for key, default in KEPT_OPTIONS.items()},
    }
    cleared = dict.fromkeys(("cron", "timezone", "interval_s", "model_ids", "model_name"))
    return {**cleared, **body, "config": config}


# Registered before /audits/{audit_id} (see api.dashboard.install), so "new" is never read as an audit id.
@router.get("/audits/new", dependencies=[PageAuth])
def new_audit(request: Request, session: SessionDep) -> Response:
    values = dict(DEFAULTS)
    for key in ("model_name", "dataset_id"):  # preselected by links of other pages
        values[key] = request.query_params.get(key, "")
    return _form(request, session, values, [], {"enabled"}, [])


async def _posted(request: Request) -> tuple[dict[str, str], list[str], set[str]]:
    form = await request.form()
    values = {key: str(form.get(key, "")) for key in DEFAULTS}
    values["transfer_source_ids"] = ",".join(str(value) for value in form.getlist("transfer_source_ids"))
    model_ids = [str(value) for value in form.getlist("model_ids")]
    return values, model_ids, {flag for flag in FLAGS if form.get(flag)}


@router.post("/audits/new", dependencies=[PageAuth, SameOrigin])
async def submit_audit(
    request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep
) -> Response:
    """Create the audit and go to its page; any bad value comes back as a message on the form."""
    values, model_ids, flags = await _posted(request)
    # Creating may check a CAM layer in a child process: keep that off the event loop.
    return await run_in_threadpool(_save, request, session, store, settings, values, model_ids, flags)


@router.get("/audits/{audit_id}/edit", dependencies=[PageAuth])
def edit_audit(request: Request, session: SessionDep, audit: PageAudit) -> Response:
    values, model_ids, flags = audit_values(audit)
    return _form(request, session, values, model_ids, flags, [], audit=audit)


@router.post("/audits/{audit_id}/edit", dependencies=[PageAuth, SameOrigin])
async def submit_edit(
    request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep, audit: PageAudit
) -> Response:
    """Change the audit as PATCH /api/v1/audits/{id} does and go back to its page; bad values come back."""
    values, model_ids, flags = await _posted(request)
    return await run_in_threadpool(_save, request, session, store, settings, values, model_ids, flags, audit)


def _save(
    request: Request,
    session,
    store,
    settings,
    values: dict[str, str],
    model_ids: list[str],
    flags: set[str],
    audit: Audit | None = None,
) -> Response:
    """Create an audit (audit None) or change `audit`; validation happens in the service, before any write."""
    body, problems = audit_request(values, model_ids, flags)
    if problems:
        return _form(
            request, session, values, model_ids, flags, problems, HTTPStatus.UNPROCESSABLE_ENTITY, audit
        )
    try:
        if audit is None:
            saved = audit_service.create_audit(
                session=session,
                store=store,
                settings=settings,
                body=AuditCreate.model_validate(body, strict=False),
            )
        else:
            saved = audit_service.update_audit(
                session=session,
                store=store,
                settings=settings,
                audit=audit,
                body=AuditUpdate.model_validate(update_request(audit, body), strict=False),
            )
    except ValidationError as error:
        messages = evaluation_form.form_messages(error, LABELS)
        return _form(
            request, session, values, model_ids, flags, messages, HTTPStatus.UNPROCESSABLE_ENTITY, audit
        )
    except (ApiError, AdvauditError) as error:
        status = error.status if isinstance(error, ApiError) else HTTPStatus.UNPROCESSABLE_ENTITY
        return _form(request, session, values, model_ids, flags, [str(error)], status, audit)
    suffix = "" if audit is None else "?saved=1"
    return RedirectResponse(f"/audits/{saved.id}{suffix}", status_code=HTTPStatus.SEE_OTHER)
