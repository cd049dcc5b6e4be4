"""The transfer metric of a verdict: the black-box worst case at the ranking ε, against the baseline run's."""

from __future__ import annotations

from dataclasses import replace

from services.audit_transfer import TransferOutcome, ranking_eps
from services.audit_verdict import THRESHOLD_SPECS, JobResult, Thresholds, judge

EPS = (0.0, 4 / 255, 8 / 255)
REPORT = {
    "fgsm": [{"eps": e, "accuracy": a} for e, a in zip(EPS, (0.9, 0.7, 0.5), strict=True)],
    "summary": {"clean_accuracy": 0.9, "robust_auc": 0.7},
}


def outcome(transfer_id: int, worst=(0.9, 0.8, 0.6), status="succeeded", sources=(7, 8), error=None):
    return TransferOutcome(
        transfer_id=transfer_id,
        status=status,
        source_ids=sources,
        error=error,
        worst_case={round(e, 9): w for e, w in zip(EPS, worst, strict=True)},
    )


def job(job_id: int, transfer: TransferOutcome | None) -> JobResult:
    return JobResult(
        job_id, 1, "net", f"v{job_id}", "succeeded", report=REPORT, run_id=job_id, transfer=transfer
    )


def transfer_rows(verdict) -> list[dict]:
    rows = verdict.comparisons[0]["rows"]
    return [row for row in rows if row["metric"] == "transfer_worst_case_accuracy"]


def test_the_threshold_is_declared_once_with_the_others():
    spec = THRESHOLD_SPECS["transfer_worst_case_drop_pp"]
    assert (spec.label, spec.unit, spec.flag, spec.default) == (
        "Transfer worst-case accuracy drop",
        "pp",
        "--max-transfer-drop",
        5.0,
    )
    assert Thresholds().transfer_worst_case_drop_pp == 5.0


def test_the_ranking_eps_is_8_255_when_present_else_the_largest_nonzero():
    assert ranking_eps(EPS) == round(8 / 255, 9)
    assert ranking_eps([0.0, 0.01, 0.02]) == 0.02
    assert ranking_eps([0.0]) is None


def test_a_drop_beyond_the_threshold_at_the_ranking_eps_regresses_and_is_named():
    verdict = judge([(job(2, outcome(12, worst=(0.9, 0.8, 0.50))), job(1, outcome(11)))], Thresholds())
    assert verdict.verdict == "regressed"
    (row,) = transfer_rows(verdict)
    assert row["eps"] == round(8 / 255, 9)
    assert (round(row["baseline"], 6), round(row["candidate"], 6), row["regressed"]) == (60.0, 50.0, True)
    assert "black-box (transfer) worst-case accuracy at ε=8/255 fell 10.0 pp (60.0 → 50.0" in verdict.reason
    assert verdict.comparisons[0]["candidate"]["transfer_job_id"] == 12


def test_a_drop_within_the_threshold_passes():
    verdict = judge([(job(2, outcome(12, worst=(0.9, 0.8, 0.57))), job(1, outcome(11)))], Thresholds())
    assert verdict.verdict == "passed"
    (row,) = transfer_rows(verdict)
    assert row["regressed"] is False and round(row["delta"], 6) == -3.0


def test_a_baseline_without_transfer_lists_the_metric_without_a_verdict():
    verdict = judge([(job(2, outcome(12, worst=(0.0, 0.0, 0.0))), job(1, None))], Thresholds())
    assert verdict.verdict == "passed"
    (row,) = transfer_rows(verdict)
    assert row["baseline"] is None and row["candidate"] == 0.0 and row["regressed"] is False
    assert any("measured no transfer robustness" in w for w in verdict.comparisons[0]["warnings"])


def test_a_baseline_with_other_sources_is_not_compared():
    baseline = outcome(11, worst=(1.0, 1.0, 1.0), sources=(7,))
    verdict = judge([(job(2, outcome(12, worst=(0.0, 0.0, 0.0))), job(1, baseline))], Thresholds())
    assert verdict.verdict == "passed"
    assert transfer_rows(verdict)[0]["baseline"] is None
    assert any("other sources" in w for w in verdict.comparisons[0]["warnings"])


def test_a_failed_transfer_job_makes_the_run_an_error_with_its_reason():
    failed = outcome(12, status="failed", error="source model 7: NaN logits")
    verdict = judge([(job(2, failed), job(1, outcome(11)))], Thresholds())
    assert verdict.verdict == "error"
    assert "transfer job 12 failed: source model 7: NaN logits" in verdict.reason
    # even without a baseline, a failed transfer job is not a baseline
    assert judge([(job(2, failed), None)], Thresholds()).verdict == "error"


def test_a_disabled_threshold_never_regresses_and_no_transfer_means_no_row():
    off = replace(Thresholds(), transfer_worst_case_drop_pp=None)
    verdict = judge([(job(2, outcome(12, worst=(0.0, 0.0, 0.0))), job(1, outcome(11)))], off)
    assert verdict.verdict == "passed"
    plain = judge([(job(2, None), job(1, None))], Thresholds())
    assert transfer_rows(plain) == [] and "transfer_job_id" not in plain.comparisons[0]["candidate"]
