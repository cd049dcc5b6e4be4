"""The new-evaluation form: it submits through the same use case as POST /api/v1/jobs."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from api.dashboard.auth import PageAuth, SameOrigin
from api.dashboard.templating import render
from api.deps import EnqueueDep, SessionDep, StoreDep
from api.errors import ApiError
from api.schemas import JobCreate
from api.services import dashboard as views
from api.services import jobs as job_service
from services.errors import AdvauditError

router = APIRouter(include_in_schema=False)

DEFAULTS = {"eps": "0,1/255,2/255,4/255,8/255,16/255", "targeted": "", "target_class": "0",
            "targeted_eps": "", "cam": "auto", "cam_eps": "8/255", "cam_samples": "16", "limit": "",
            "device": "auto", "precision": "fp32", "batch_size": "128", "seed": "0"}
LABELS = {"model_id": "Model", "dataset_id": "Dataset", "eps": "ε list", "targeted": "Targeted policy",
          "targeted_eps": "Targeted ε list", "cam": "CAM layer", "cam_eps": "CAM ε",
          "cam_samples": "CAM samples", "limit": "Sample limit", "device": "Device", "precision": "Precision",
          "batch_size": "Batch size", "seed": "Seed", "save_adversarial": "Save adversarial examples",
          "channels_last": "Channels-last"}
TARGET_POLICIES = ("next", "random", "least-likely", "class")
TEXT_FIELDS = tuple(DEFAULTS) + ("model_id", "dataset_id")
FLAGS = ("save_adversarial", "channels_last")


def _choices(session) -> dict[str, Any]:
    # The CAM layer list is not here: the page asks GET /api/v1/models/{id}/architecture for the chosen model.
    return {"models": views.models(session=session), "datasets": views.datasets(session=session),
            "target_policies": TARGET_POLICIES}


def job_request(values: dict[str, str], flags: set[str]) -> dict[str, Any]:
    """The POST /jobs body the form describes; empty optional fields are left to the defaults."""
    config: dict[str, Any] = {key: values[key] for key in ("eps", "cam", "cam_eps", "cam_samples", "limit",
                                                         "device", "precision", "batch_size", "seed",
                                                         "targeted_eps") if values.get(key, "").strip()}
    policy = values.get("targeted", "").strip()
    if policy == "class":
        config["targeted"] = f"class:{values.get('target_class', '').strip()}"
    elif policy:
        config["targeted"] = policy
    for flag in FLAGS:
        config[flag] = flag in flags
    return {"model_id": values.get("model_id", ""), "dataset_id": values.get("dataset_id", ""),
            "config": config}


def form_messages(error: ValidationError, labels: dict[str, str]) -> list[str]:
    """One readable line per invalid field, named by its form label (`labels`: field → label)."""
    messages = []
    for item in error.errors(include_url=False):
        field = next((str(part) for part in reversed(item["loc"]) if str(part) in labels), None)
        label = labels.get(field, "Form") if field else "Form"
        if item.get("input") == "":
            messages.append(f"{label}: choose or enter a value")
        elif item["type"] == "string_pattern_mismatch":  # the regular expression would mean nothing to a reader
            messages.append(f"{label}: contains a character that is not allowed here (/, \\ or a control character)")
        else:
            messages.append(f"{label}: {item['msg'].removeprefix('Value error, ')}")
    return messages


def _form(request: Request, session, values: dict[str, str], flags: set[str], errors: list[str],
          status: int = HTTPStatus.OK) -> Response:
    return render(request, "new_evaluation.html", {"values": values, "flags": flags, "errors": errors,
                                                   **_choices(session)}, status_code=status)


@router.get("/evaluations/new", dependencies=[PageAuth])
def new_evaluation(request: Request, session: SessionDep) -> Response:
    values = dict(DEFAULTS)
    for key in ("model_id", "dataset_id"):  # preselected by the "evaluate" links of other pages
        values[key] = request.query_params.get(key, "")
    return _form(request, session, values, set(), [])


@router.post("/evaluations/new", dependencies=[PageAuth, SameOrigin])
async def submit_evaluation(request: Request, session: SessionDep, store: StoreDep,
                            enqueue: EnqueueDep) -> Response:
    """Create the job and go to its page; any bad value comes back as a message on the form."""
    form = await request.form()
    values = {key: str(form.get(key, "")) for key in TEXT_FIELDS}
    flags = {flag for flag in FLAGS if form.get(flag)}
    # Submitting may check a CAM layer in a child process: keep that off the event loop.
    return await run_in_threadpool(_submit, request, session, store, enqueue, values, flags)


def _submit(request: Request, session, store, enqueue, values: dict[str, str], flags: set[str]) -> Response:
    try:
        body = JobCreate.model_validate(job_request(values, flags), strict=False)  # form values are text
        job = job_service.submit(session=session, store=store, enqueue=enqueue, model_id=body.model_id,
                                 dataset_id=body.dataset_id, options=body.config.evaluation_options())
    except ValidationError as error:
        return _form(request, session, values, flags, form_messages(error, LABELS), HTTPStatus.UNPROCESSABLE_ENTITY)
    except (ApiError, AdvauditError) as error:
        status = error.status if isinstance(error, ApiError) else HTTPStatus.UNPROCESSABLE_ENTITY
        return _form(request, session, values, flags, [str(error)], status)
    return RedirectResponse(f"/jobs/{job.id}", status_code=HTTPStatus.SEE_OTHER)
