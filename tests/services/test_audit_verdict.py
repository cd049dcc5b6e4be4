"""Verdicts from report documents: metric rows, thresholds, and passed / regressed / error / baseline."""

from __future__ import annotations

import pytest

from services.audit_verdict import JobResult, MetricRow, Metrics, Thresholds, compare_metrics, judge
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
