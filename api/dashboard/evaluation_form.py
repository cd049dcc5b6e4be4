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
from services.specs import OPTIONS

router = APIRouter(include_in_schema=False)

# The form's fields are the declared evaluation options (services.specs.OPTIONS), with their defaults and
# labels; triptychs keep their default (the report draws them, nobody tunes their count in a form).
FORM_OPTIONS = tuple(option for option in OPTIONS if option.name != "triptychs")
DEFAULTS = {option.name: option.default_text for option in FORM_OPTIONS if option.kind != "flag"} | {
    "target_class": "0"
}  # the K of the "class K" target policy, a field of its own
LABELS = {"model_id": "Model", "dataset_id": "Dataset", **{option.name: option.label for option in OPTIONS}}
TARGET_POLICIES = ("next", "random", "least-likely", "class")
# The options the form templates lay out by hand; any other declared option gets a generic field of its kind
# (_form_fields.html's other_options), so a new option needs no template change.
LAID_OUT = frozenset(
    {
        "eps",
        "targeted",
        "targeted_eps",
        "cam",
        "cam_eps",
        "cam_samples",
        "limit",
        "batch_size",
        "device",
        "precision",
        "seed",
        "channels_last",
        "save_adversarial",
    }
)
OTHER_OPTIONS = tuple(option for option in FORM_OPTIONS if option.name not in LAID_OUT)
TEXT_FIELDS = (*DEFAULTS, "model_id", "dataset_id")
FLAGS = tuple(option.name for option in FORM_OPTIONS if option.kind == "flag")


def _choices(session) -> dict[str, Any]:
    # The CAM layer list is not here: the page asks GET /api/v1/models/{id}/architecture for the chosen model.
    return {
        "models": views.models(session=session),
        "datasets": views.datasets(session=session),
        "target_policies": TARGET_POLICIES,
    }


def job_request(values: dict[str, str], flags: set[str]) -> dict[str, Any]:
    """The POST /jobs body the form describes; empty optional fields are left to the defaults."""
    config: dict[str, Any] = {
        key: values[key]
        for key in DEFAULTS
        if key not in ("targeted", "target_class") and values.get(key, "").strip()
    }
    policy = values.get("targeted", "").strip()
    if policy == "class":
        config["targeted"] = f"class:{values.get('target_class', '').strip()}"
    elif policy:
        config["targeted"] = policy
    for flag in FLAGS:
        config[flag] = flag in flags
    return {
        "model_id": values.get("model_id", ""),
        "dataset_id": values.get("dataset_id", ""),
        "config": config,
    }


def form_messages(error: ValidationError, labels: dict[str, str]) -> list[str]:
    """One readable line per invalid field, named by its form label (`labels`: field → label)."""
    messages = []
    for item in error.errors(include_url=False):
        field = next((str(part) for part in reversed(item["loc"]) if str(part) in labels), None)
        label = labels.get(field, "Form") if field else "Form"
        if item.get("input") == "":
            messages.append(f"{label}: choose or enter a value")
        elif (
            item["type"] == "string_pattern_mismatch"
        ):  # the regular expression would mean nothing to a reader
            messages.append(
                f"{label}: contains a character that is not allowed here (/, \\ or a control character)"
            )
        else:
            messages.append(f"{label}: {item['msg'].removeprefix('Value error, ')}")
    return messages


def _form(
    request: Request,
    session,
    values: dict[str, str],
    flags: set[str],
    errors: list[str],
    status: int = HTTPStatus.OK,
) -> Response:
    return render(
        request,
        "new_evaluation.html",
        {
            "values": values,
            "flags": flags,
            "errors": errors,
            "other_options": OTHER_OPTIONS,
            **_choices(session),
        },
        status_code=status,
    )


@router.get("/evaluations/new", dependencies=[PageAuth])
def new_evaluation(request: Request, session: SessionDep) -> Response:
    values = dict(DEFAULTS)
    for key in ("model_id", "dataset_id"):  # preselected by the "evaluate" links of other pages
        values[key] = request.query_params.get(key, "")
    return _form(request, session, values, set(), [])


@router.post("/evaluations/new", dependencies=[PageAuth, SameOrigin])
async def submit_evaluation(
    request: Request, session: SessionDep, store: StoreDep, enqueue: EnqueueDep
) -> Response:
    """Create the job and go to its page; any bad value comes back as a message on the form."""
    form = await request.form()
    values = {key: str(form.get(key, "")) for key in TEXT_FIELDS}
    flags = {flag for flag in FLAGS if form.get(flag)}
    # Submitting may check a CAM layer in a child process: keep that off the event loop.
    return await run_in_threadpool(_submit, request, session, store, enqueue, values, flags)


def _submit(request: Request, session, store, enqueue, values: dict[str, str], flags: set[str]) -> Response:
    try:
        body = JobCreate.model_validate(job_request(values, flags), strict=False)  # form values are text
        job = job_service.submit(
            session=session,
            store=store,
            enqueue=enqueue,
            model_id=body.model_id,
            dataset_id=body.dataset_id,
            options=body.config.evaluation_options(),
        )
    except ValidationError as error:
        return _form(
            request, session, values, flags, form_messages(error, LABELS), HTTPStatus.UNPROCESSABLE_ENTITY
        )
    except (ApiError, AdvauditError) as error:
        status = error.status if isinstance(error, ApiError) else HTTPStatus.UNPROCESSABLE_ENTITY
        return _form(request, session, values, flags, [str(error)], status)
    return RedirectResponse(f"/jobs/{job.id}", status_code=HTTPStatus.SEE_OTHER)
