"""Audit definitions: validate everything before anything is written, then create, change, list or delete."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.audit_schemas import AuditCreate, AuditUpdate
from api.errors import Conflict, Unprocessable
from api.services import page
from api.services.audit_runs import brief
from api.services.audit_sources import checked_sources
from api.services.jobs import build_config, check_cam_layer, check_compatible, check_feature_layers
from contracts.settings import Settings
from db import repositories as repo
from db.base import utcnow
from db.models import Audit, ModelRecord
from db.storage import ArtifactStore
from services.audit_schedule import Schedule
from services.audit_states import FINISHED
from services.audit_verdict import Thresholds
from services.job_states import SUCCEEDED
from services.webhook_targets import check_webhook_url

SCHEDULE_FIELDS = ("cron", "timezone", "interval_s")
FIELDS = (
    "name",
    "enabled",
    *SCHEDULE_FIELDS,
    "model_ids",
    "model_name",
    "dataset_id",
    "config",
    "baseline_job_id",
    "thresholds",
    "webhook_url",
    "run_on_new_version",
    "transfer_source_ids",
)


def find(*, session: Session, audit_id: int) -> Audit | None:
    return repo.audits.get(session=session, audit_id=audit_id)


def _check_webhook(url: str | None, settings: Settings) -> None:
    """A well-formed http(s) URL whose host is public unless allowed (services.webhook_targets; 422 otherwise)."""
    if url is not None:
        check_webhook_url(url, allow_private=settings.webhook_allow_private)


def _selected_models(session: Session, values: dict[str, Any]) -> list[ModelRecord]:
    """The models the selector names now (the newest version for a name); 422 for unknown ones."""
    ids, name = values["model_ids"], values["model_name"]
    if (ids is None) == (name is None):
        raise Unprocessable(
            "give exactly one model selector: model_ids (fixed models) or model_name (always "
            "its newest version)"
        )
    if name is not None:
        model = repo.models.get_by_name(session=session, name=name)
        if model is None:
            raise Unprocessable(
                f"no model named {name!r} is registered; register it first (POST /api/v1/models)"
            )
        return [model]
    models = []
    for model_id in ids:
        model = repo.models.get(session=session, model_id=model_id)
        if model is None:
            raise Unprocessable(f"model_ids: model {model_id} does not exist")
        models.append(model)
    return models


def _check_baseline(session: Session, job_id: int | None, dataset_id: int) -> None:
    if job_id is None:
        return
    job = repo.jobs.get(session=session, job_id=job_id)
    if job is None:
        raise Unprocessable(f"baseline_job_id: job {job_id} does not exist")
    if job.status != SUCCEEDED:
        raise Unprocessable(f"baseline_job_id: job {job_id} is {job.status}; pin a succeeded job")
    if job.dataset_id != dataset_id:
        raise Unprocessable(
            f"baseline_job_id: job {job_id} ran on dataset {job.dataset_id}, not on the audit's "
            f"dataset {dataset_id}"
        )


def validated(
    *,
    session: Session,
    store: ArtifactStore,
    settings: Settings,
    values: dict[str, Any],
    audit_id: int | None = None,
) -> dict[str, Any]:
    """The audit's complete field values, normalised; ConfigError / Unprocessable / Conflict on bad input."""
    existing = repo.audits.get_by_name(session=session, name=values["name"])
    if existing is not None and existing.id != audit_id:
        raise Conflict(
            f"an audit named {values['name']!r} exists already (id {existing.id}); pick another name"
        )
    for name in ("cron", "timezone"):
        if values[name] is not None:
            values[name] = values[name].strip()
    Schedule.build(
        cron=values["cron"],
        interval_s=values["interval_s"],
        timezone=values["timezone"],
        min_interval_s=settings.audit_min_interval_s,
    )
    if values["model_ids"] is not None:
        values["model_ids"] = list(dict.fromkeys(values["model_ids"]))  # repeats dropped, order kept
    models = _selected_models(session, values)
    if values["run_on_new_version"] and values["model_name"] is None:
        raise Unprocessable(
            "run_on_new_version needs a model_name selector: fixed model_ids never get a new version"
        )
    dataset = repo.datasets.get(session=session, dataset_id=values["dataset_id"])
    if dataset is None:
        raise Unprocessable(f"dataset_id {values['dataset_id']}: there is no such dataset")
    config = build_config(values["config"])
    for model in models:
        check_compatible(model, dataset, config)
        check_cam_layer(session, store, model, dataset, config)
        check_feature_layers(store, model, dataset, config)
    values["transfer_source_ids"] = checked_sources(session, values["transfer_source_ids"], models, dataset)
    _check_baseline(session, values["baseline_job_id"], dataset.id)
    _check_webhook(values["webhook_url"], settings)
    return {
        **values,
        "config": config.to_dict(),
        "thresholds": Thresholds.from_dict(values["thresholds"]).to_dict(),
    }


def create_audit(*, session: Session, store: ArtifactStore, settings: Settings, body: AuditCreate) -> Audit:
    values = body.model_dump(include=set(FIELDS))
    values["config"] = body.config.evaluation_options()
    audit = repo.audits.create(
        session=session, **validated(session=session, store=store, settings=settings, values=values)
    )
    session.commit()
    return audit


def _merged(audit: Audit, body: AuditUpdate) -> dict[str, Any]:
    given = body.model_fields_set
    values = {name: getattr(audit, name) for name in FIELDS}
    changes = body.model_dump(include=given & set(FIELDS))
    # One schedule kind and one model selector at a time: naming one in a change replaces the other.
    if changes.get("cron") is not None and "interval_s" not in given:
        values["interval_s"] = None
    if changes.get("interval_s") is not None and "cron" not in given:
        values["cron"] = values["timezone"] = None
    if "cron" in given and changes["cron"] is None and "timezone" not in given:
        values["timezone"] = None
    if changes.get("model_ids") is not None and "model_name" not in given:
        values["model_name"] = None
        values["run_on_new_version"] = changes.get("run_on_new_version", False)
    if changes.get("model_name") is not None and "model_ids" not in given:
        values["model_ids"] = None
    if "config" in changes:
        changes["config"] = body.config.evaluation_options() if body.config is not None else {}
    if "thresholds" in changes:
        changes["thresholds"] = (
            {**values["thresholds"], **body.thresholds.model_dump(include=body.thresholds.model_fields_set)}
            if body.thresholds is not None
            else {}
        )
    for name in ("name", "enabled", "dataset_id", "run_on_new_version"):
        if name in changes and changes[name] is None:
            raise Unprocessable(f"{name} cannot be null")
    return {**values, **changes}


def update_audit(
    *, session: Session, store: ArtifactStore, settings: Settings, audit: Audit, body: AuditUpdate
) -> Audit:
    """Apply a partial change; a changed schedule, or re-enabling, counts slots from now (no instant catch-up)."""
    values = validated(
        session=session, store=store, settings=settings, values=_merged(audit, body), audit_id=audit.id
    )
    restart = any(values[name] != getattr(audit, name) for name in SCHEDULE_FIELDS) or (
        values["enabled"] and not audit.enabled
    )
    changes = {name: value for name, value in values.items() if value != getattr(audit, name)}
    if restart:
        changes["schedule_from"] = utcnow()
    repo.audits.update(session=session, audit=audit, **changes)
    session.commit()
    return audit


def delete_audit(*, session: Session, audit: Audit) -> None:
    """Delete the audit and its runs; the jobs they created (and their reports) stay."""
    repo.audits.delete(session=session, audit=audit)
    session.commit()


def audit_read(
    session: Session, audit: Audit, latest: dict | None = None, latest_finished: dict | None = None
) -> dict[str, Any]:
    """AuditRead: the definition plus the next slot, the newest run and the newest verdict."""
    if latest is None:
        latest = repo.audits.list_latest_runs(session=session, audit_ids=[audit.id])
        latest_finished = repo.audits.list_latest_runs(session=session, audit_ids=[audit.id], status=FINISHED)
    schedule = Schedule.build(
        cron=audit.cron, interval_s=audit.interval_s, timezone=audit.timezone, min_interval_s=1
    )
    last, finished = latest.get(audit.id), (latest_finished or {}).get(audit.id)
    return {
        **{name: getattr(audit, name) for name in FIELDS},
        "id": audit.id,
        "baseline": "previous" if audit.baseline_job_id is None else "job",
        "created_at": audit.created_at,
        "updated_at": audit.updated_at,
        "next_run_at": schedule.next_slot(utcnow()) if schedule is not None and audit.enabled else None,
        "last_run": brief(last) if last is not None else None,
        "last_verdict": finished.verdict if finished is not None else None,
    }


def list_audits(
    *, session: Session, enabled: bool | None, model_name: str | None, limit: int, offset: int
) -> dict[str, Any]:
    """A page of audits (newest first), each with its last run and last verdict."""
    rows = repo.audits.list(
        session=session, enabled=enabled, model_name=model_name, limit=limit, offset=offset
    )
    ids = [audit.id for audit in rows]
    latest = repo.audits.list_latest_runs(session=session, audit_ids=ids)
    finished = repo.audits.list_latest_runs(session=session, audit_ids=ids, status=FINISHED)
    total = repo.audits.count(session=session, enabled=enabled, model_name=model_name)
    return page([audit_read(session, audit, latest, finished) for audit in rows], total, limit, offset)
