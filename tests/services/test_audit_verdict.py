"""Verdicts from report documents: metric rows, thresholds, and passed / regressed / error / baseline."""

from __future__ import annotations

import pytest

from services.audit_states import REFERENCE_VERDICTS
from services.audit_verdict import (
    THRESHOLD_SPECS,
    JobResult,
    MetricRow,
    Metrics,
    Thresholds,
    compare_metrics,
    judge,
)
from services.errors import ConfigError


def report(
    clean=0.95,
    acc=(0.95, 0.80, 0.50),
    eps=(0.0, 4 / 255, 8 / 255),
    tsr=(0.0, 0.05, 0.10),
    auc=0.75,
    drift=0.20,
) -> dict:
    """A report.json-shaped document with the fields a verdict reads."""
    return {
        "fgsm": [{"eps": e, "accuracy": a} for e, a in zip(eps, acc, strict=True)],
        "targeted_fgsm": {
            "policy": "next",
            "points": [{"eps": e, "target_success_rate": t} for e, t in zip(eps, tsr, strict=True)],
        },
        "summary": {"clean_accuracy": clean, "robust_auc": auc, "cam_drift": drift},
    }


def job(
    job_id: int,
    document: dict | None = None,
    status: str = "succeeded",
    error: str | None = None,
    version: str = "v2",
) -> JobResult:
    return JobResult(
        job_id=job_id,
        model_id=job_id,
        model_name="net",
        model_version=version,
        status=status,
        error=error,
        report=document,
        run_id=None,
    )


def rows_by_key(rows: list[MetricRow]) -> dict:
    return {(row.metric, None if row.eps is None else round(row.eps * 255)): row for row in rows}


def test_rows_are_in_percentage_points_with_drops_and_rises_judged_by_their_threshold():
    rows = rows_by_key(
        compare_metrics(
            Metrics.from_report(report()),
            Metrics.from_report(report(acc=(0.96, 0.78, 0.40), tsr=(0.0, 0.05, 0.16), auc=0.70, drift=0.35)),
            Thresholds(),
        )
    )
    assert list(rows) == [
        ("clean_accuracy", None),
        ("robust_auc", None),
        ("accuracy", 0),
        ("accuracy", 4),
        ("accuracy", 8),
        ("target_success_rate", 0),
        ("target_success_rate", 4),
        ("target_success_rate", 8),
        ("cam_drift", None),
    ]
    at8 = rows[("accuracy", 8)]
    assert (at8.baseline, at8.candidate, at8.threshold, at8.unit, at8.direction) == (
        50.0,
        40.0,
        5.0,
        "pp",
        "drop",
    )
    assert at8.delta == pytest.approx(-10.0) and at8.regressed
    assert not rows[("accuracy", 4)].regressed  # −2 pp is within 5 pp
    assert rows[("robust_auc", None)].regressed  # −5 pp > 3 pp
    assert rows[("target_success_rate", 8)].regressed and rows[("target_success_rate", 8)].direction == "rise"
    drift = rows[("cam_drift", None)]
    assert drift.unit == "drift" and drift.delta == pytest.approx(0.15) and drift.regressed
    assert at8.describe() == "accuracy at ε=8/255 fell 10.0 pp (50.0 → 40.0; allowed 5 pp)"


def test_a_change_exactly_at_the_threshold_passes_and_none_disables_a_check():
    base, cand = report(clean=0.95), report(clean=0.93, acc=(0.93, 0.80, 0.50))
    rows = rows_by_key(compare_metrics(Metrics.from_report(base), Metrics.from_report(cand), Thresholds()))
    clean = rows[("clean_accuracy", None)]
    assert clean.delta == pytest.approx(-2.0) and not clean.regressed
    off = Thresholds(accuracy_drop_pp=None)
    rows = rows_by_key(
        compare_metrics(Metrics.from_report(base), Metrics.from_report(report(acc=(0.5, 0.1, 0.0))), off)
    )
    assert not any(row.regressed for key, row in rows.items() if key[0] == "accuracy")


def test_missing_metrics_are_listed_but_never_regress():
    base = report(eps=(0.0, 4 / 255, 8 / 255))
    cand = report(eps=(0.0, 4 / 255, 16 / 255), drift=None)
    cand["targeted_fgsm"] = None
    rows = rows_by_key(compare_metrics(Metrics.from_report(base), Metrics.from_report(cand), Thresholds()))
    assert rows[("accuracy", 8)].candidate is None and rows[("accuracy", 16)].baseline is None
    assert rows[("target_success_rate", 8)].candidate is None and rows[("cam_drift", None)].candidate is None
    assert not any(row.regressed for key, row in rows.items() if row.delta is None)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"accuracy_drop_pp": -1}, "accuracy_drop_pp"),
        ({"accuracy_drop_pp": float("nan")}, "accuracy_drop_pp"),
        ({"robust_auc_drop_pp": 101}, r"\[0, 100\]"),
        ({"cam_drift_rise": 3}, r"\[0, 2\]"),
        ({"clean_accuracy_drop_pp": True}, "clean_accuracy_drop_pp"),
        ({"accuracy": 5}, "unknown threshold"),
    ],
)
def test_bad_thresholds_are_refused(data, message):
    with pytest.raises(ConfigError, match=message):
        Thresholds.from_dict(data)


def test_judge_passed_regressed_baseline_and_error():
    base = job(1, report(), version="v1")
    same = judge([(job(2, report()), base)], Thresholds())
    assert same.verdict == "passed" and "baseline job 1" in same.reason
    worse = judge([(job(3, report(acc=(0.95, 0.70, 0.30))), base)], Thresholds())
    assert worse.verdict == "regressed"
    regressed = [row for row in worse.comparisons[0]["rows"] if row["regressed"]]
    assert [(row["metric"], round(row["eps"] * 255)) for row in regressed] == [
        ("accuracy", 4),
        ("accuracy", 8),
    ]
    assert worse.reason.startswith("2 metric(s) regressed — net v2: accuracy at ε=4/255 fell 10.0 pp")
    assert "accuracy at ε=8/255 fell 20.0 pp (50.0 → 30.0; allowed 5 pp)" in worse.reason
    assert (
        worse.comparisons[0]["candidate"]["job_id"] == 3 and worse.comparisons[0]["baseline"]["job_id"] == 1
    )
    first = judge([(job(4, report()), None)], Thresholds())
    assert first.verdict == "baseline" and "baseline of the next" in first.reason
    failed = judge([(job(5, None, status="failed", error="NaN logits"), base)], Thresholds())
    assert failed.verdict == "error" and failed.reason == "job 5 (net v2) failed: NaN logits"
    cancelled = judge([(job(6, None, status="cancelled"), None)], Thresholds())
    assert cancelled.verdict == "error" and "was cancelled" in cancelled.reason
    told = judge(
        [(job(7, report()), None)], Thresholds(), errors=["the pinned baseline job 9 no longer exists"]
    )
    assert told.verdict == "error" and told.errors == ["the pinned baseline job 9 no longer exists"]


def test_a_new_model_without_a_baseline_does_not_hide_another_models_regression():
    base = job(1, report(), version="v1")
    verdict = judge([(job(2, report()), base), (job(3, report(acc=(0.5, 0.2, 0.1))), None)], Thresholds())
    assert verdict.verdict == "passed" and verdict.comparisons[1]["baseline"] is None
    verdict = judge([(job(2, report(clean=0.80)), base), (job(3, report()), None)], Thresholds())
    assert verdict.verdict == "regressed"


def report_v2(worst=(0.95, 0.60, 0.20), failed=(), **fields) -> dict:
    """A schema 2 document: the v1 fields plus the worst case over every attack and the sanity section."""
    document = report(**fields)
    eps = [point["eps"] for point in document["fgsm"]]
    checks = [
        {
            "name": "gradients_usable",
            "status": "failed" if "gradients_usable" in failed else "passed",
            "detail": "40 samples (83.3 %) with a zero input gradient",
        },
        {
            "name": "outputs_are_logits",
            "status": "failed" if "outputs_are_logits" in failed else "passed",
            "detail": "48 output rows lie in [0, 1] and sum to 1: probabilities",
        },
        {"name": "monotone_in_eps", "status": "skipped", "detail": "not run"},
    ]
    verdict = "suspicious" if failed else "passed"
    document["schema_version"] = 2
    document["robust"] = {
        "attacks": ["fgsm", "pgd"],
        "points": [{"eps": e, "eps_255": e * 255, "accuracy": a} for e, a in zip(eps, worst, strict=True)],
    }
    document["sanity"] = {"verdict": verdict, "checks": checks}
    document["summary"] |= {
        "worst_case_accuracy": list(worst),
        "worst_case_auc": 0.5,
        "worst_case_attacks": ["fgsm", "pgd"],
        "sanity_verdict": verdict,
    }
    return document


def test_metrics_read_the_worst_case_and_the_sanity_verdict_of_a_v2_report():
    metrics = Metrics.from_report(report_v2(failed=("outputs_are_logits",)))
    assert metrics.report_version == 2 and metrics.worst_case_auc == 0.5
    assert list(metrics.worst_case.values()) == [0.95, 0.60, 0.20]
    assert [round(e * 255) for e in metrics.worst_case] == [0, 4, 8]
    assert metrics.suspicious and metrics.failed_checks == ("outputs_are_logits",)
    v1 = Metrics.from_report(report())
    assert v1.report_version == 1 and v1.worst_case == {} and v1.sanity_verdict is None and not v1.suspicious


def test_worst_case_accuracy_is_compared_per_eps_against_its_own_threshold():
    rows = rows_by_key(
        compare_metrics(
            Metrics.from_report(report_v2(worst=(0.95, 0.60, 0.20))),
            Metrics.from_report(report_v2(worst=(0.95, 0.58, 0.10))),
            Thresholds(),
        )
    )
    assert [key for key in rows if key[0] == "worst_case_accuracy"] == [
        ("worst_case_accuracy", 0),
        ("worst_case_accuracy", 4),
        ("worst_case_accuracy", 8),
    ]
    at8 = rows[("worst_case_accuracy", 8)]
    assert at8.regressed and at8.threshold == 5.0 and at8.delta == pytest.approx(-10.0)
    assert at8.describe() == "worst-case accuracy at ε=8/255 fell 10.0 pp (20.0 → 10.0; allowed 5 pp)"
    assert not rows[("worst_case_accuracy", 4)].regressed
    assert not any(row.regressed for key, row in rows.items() if key[0] == "accuracy")  # FGSM unchanged
    loose = compare_metrics(
        Metrics.from_report(report_v2(worst=(0.95, 0.60, 0.20))),
        Metrics.from_report(report_v2(worst=(0.95, 0.58, 0.10))),
        Thresholds(worst_case_drop_pp=15),
    )
    assert not any(row.regressed for row in loose)
    spec = THRESHOLD_SPECS["worst_case_drop_pp"]
    assert (spec.label, spec.where, spec.flag, spec.default, spec.unit) == (
        "Worst-case accuracy drop",
        "at each ε",
        "--max-worst-case-drop",
        5.0,
        "pp",
    )


def test_a_v1_baseline_lists_worst_case_rows_without_a_verdict_and_says_why():
    verdict = judge(
        [(job(2, report_v2(worst=(0.1, 0.0, 0.0))), job(1, report(), version="v1"))], Thresholds()
    )
    entry = verdict.comparisons[0]
    worst_rows = [row for row in entry["rows"] if row["metric"] == "worst_case_accuracy"]
    assert len(worst_rows) == 3 and all(
        row["baseline"] is None and not row["regressed"] for row in worst_rows
    )
    assert verdict.verdict == "passed"
    assert any("baseline report is version 1" in warning for warning in entry["warnings"])


def test_a_suspicious_candidate_never_passes_and_its_verdict_names_the_failed_checks():
    base = job(1, report_v2(), version="v1")
    failed = ("gradients_usable", "outputs_are_logits")
    with_baseline = judge([(job(12, report_v2(failed=failed)), base)], Thresholds())
    assert with_baseline.verdict == "suspicious"
    assert with_baseline.reason == (
        "job 12 (net v2): sanity checks failed: gradients_usable (Gradients are usable) — 40 samples "
        "(83.3 %) with a zero input gradient; outputs_are_logits (Outputs are logits) — 48 output rows "
        "lie in [0, 1] and sum to 1: probabilities"
    )
    candidate = with_baseline.comparisons[0]["candidate"]
    assert candidate["sanity_verdict"] == "suspicious" and candidate["failed_checks"] == list(failed)
    assert candidate["worst_case_auc"] == 0.5
    # Without a baseline it is not the baseline of the next runs either.
    alone = judge([(job(13, report_v2(failed=("outputs_are_logits",))), None)], Thresholds())
    assert alone.verdict == "suspicious" and "outputs_are_logits (Outputs are logits)" in alone.reason
    assert "suspicious" not in REFERENCE_VERDICTS
    # A regression too is named after the failed checks; a job that failed outright is still an error.
    both = judge([(job(14, report_v2(worst=(0.1, 0.0, 0.0), failed=failed)), base)], Thresholds())
    assert both.verdict == "suspicious" and "also 3 metric(s) regressed" in both.reason
    error = judge(
        [(job(15, report_v2(failed=failed)), base), (job(16, None, status="failed"), None)], Thresholds()
    )
    assert error.verdict == "error"


def test_a_suspicious_baseline_is_named_in_the_comparison():
    verdict = judge(
        [(job(2, report_v2()), job(1, report_v2(failed=("gradients_usable",)), version="v1"))], Thresholds()
    )
    assert verdict.verdict == "passed"
    assert any("baseline's evaluation is suspicious" in w for w in verdict.comparisons[0]["warnings"])
