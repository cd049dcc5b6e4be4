"""Each catalogue is declared once; the CLI, the API, the dashboard and the README are derived from it."""

from __future__ import annotations

from dataclasses import replace

from advaudit import reference
from advaudit.cli import build_parser
from api.audit_schemas import AuditThresholds
from api.dashboard import audit_form, evaluation_form
from api.dashboard.templating import templates
from api.schemas import JobConfig
from contracts.settings import Settings
from services.audit_verdict import THRESHOLD_SPECS, Thresholds
from services.specs import OPTIONS, EvaluationConfig


def _subcommand(*path: str):
    parser = build_parser()
    for name in path:
        action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = action.choices[name]
    return parser


def _flags(parser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def test_the_readme_tables_are_the_declarations():
    assert reference.render(reference.README.read_text()) == reference.README.read_text(), (
        "README tables are stale: run `.venv/bin/python -m advaudit.reference`"
    )


def test_every_surface_offers_exactly_the_declared_options():
    names = {option.name for option in OPTIONS}
    assert set(JobConfig.model_fields) == names
    for command in (("evaluate",), ("jobs", "submit"), ("audits", "add")):
        assert {option.flag for option in OPTIONS} <= _flags(_subcommand(*command)), command
    assert (
        set(evaluation_form.DEFAULTS) - {"target_class"} | set(evaluation_form.FLAGS) | {"triptychs"} == names
    )
    for option in OPTIONS:
        assert evaluation_form.LABELS[option.name] == option.label
        schema = JobConfig.model_json_schema()["properties"][option.name]
        assert schema["description"] == option.describe()
        numeric = ("integer", "number")
        typed = next((item for item in schema.get("anyOf", [schema]) if item.get("type") in numeric), {})
        assert typed.get("minimum") == option.minimum and typed.get("maximum") == option.maximum


def test_defaults_agree_everywhere():
    config = EvaluationConfig()
    parsed = _subcommand("evaluate").parse_args(["--model", "m", "--dataset", "d", "--out", "o"])
    from advaudit.options import config_from_args

    assert config_from_args(parsed) == config
    assert EvaluationConfig(**JobConfig().evaluation_options()) == config
    form = {key: value for key, value in evaluation_form.DEFAULTS.items() if key != "target_class"}
    body = evaluation_form.job_request({**form, "model_id": "1", "dataset_id": "1"}, set())
    assert (
        EvaluationConfig(**JobConfig.model_validate(body["config"], strict=False).evaluation_options())
        == config
    )


def test_thresholds_come_from_their_declaration():
    defaults = Thresholds()
    assert set(AuditThresholds.model_fields) == set(THRESHOLD_SPECS) == set(audit_form.THRESHOLDS)
    for name, spec in THRESHOLD_SPECS.items():
        field = AuditThresholds.model_fields[name]
        assert field.default == getattr(defaults, name) == spec.default
        assert audit_form.DEFAULTS[name] == f"{spec.default:g}" and audit_form.LABELS[name] == spec.label
    assert {spec.flag for spec in THRESHOLD_SPECS.values()} <= _flags(_subcommand("audits", "add"))


def test_settings_defaults_feed_the_webhook_settings():
    from worker.webhooks import WebhookSettings

    settings = Settings()
    assert WebhookSettings() == WebhookSettings.from_settings(settings)


def test_a_new_option_gets_a_form_field_without_a_template_change():
    """What adding an option to EvaluationConfig's field table gives the dashboard (its other surfaces are
    generated from the same table): a generic field of its kind, read back into the job request."""
    hypothetical = replace(
        next(option for option in OPTIONS if option.name == "cam_samples"),
        name="warmup_steps",
        label="Warm-up steps",
        help="warm-up steps of each attack",
        default=1,
    )
    macro = templates.env.get_template("_form_fields.html").module.other_option_fields
    html = str(macro([hypothetical], {"warmup_steps": "3"}, set()))
    assert 'name="warmup_steps"' in html and 'value="3"' in html and "Warm-up steps" in html
    assert 'min="0"' in html and "warm-up steps of each attack (0 ≤ N ≤ 10000; default 1)" in html
    # the attack and sanity options came in this way: generic fields, no template lays them out
    generic = {option.name for option in evaluation_form.OTHER_OPTIONS}
    assert generic == {option.name for option in OPTIONS} - evaluation_form.LAID_OUT - {"triptychs"}
    assert {"attacks", "steps", "queries", "sanity_tolerance"} <= generic
