"""Regression verdicts: compare a candidate evaluation with its baseline, metric by metric, against thresholds.

Accuracies, robust AUC and target success rates are compared in percentage points (pp): the rows carry
them as percentages (0–100), so `delta` and `threshold` read directly in pp. CAM drift (1 − mean
correlation, 0–2) keeps its own scale. A metric missing on either side is listed but never regresses.

Worst-case accuracy (the per-sample worst case over every attack, report schema 2) is compared per ε; a
version 1 report (FGSM only) has none, so its rows are listed without a verdict. A candidate whose report's
sanity verdict is `suspicious` makes the run `suspicious`, with or without a baseline: its numbers cannot be
trusted. The report readers below are pure (no torch), so the command line can use them too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from services.audit_states import BASELINE, ERROR, PASSED, REGRESSED, SUSPICIOUS
from services.audit_transfer import EPS_DIGITS, TransferOutcome, ranking_eps
from services.errors import ConfigError
from services.job_states import SUCCEEDED

TOLERANCE = 1e-9  # a change exactly at the threshold is allowed, whatever the float rounding
# How a job that did not succeed is named in an `error` verdict's reason.
OUTCOME_WORDS = {
    "failed": "failed",
    "cancelled": "was cancelled",
    "queued": "never started",
    "running": "did not finish",
}
METRIC_NAMES = {
    "clean_accuracy": "clean accuracy",
    "robust_auc": "robust AUC",
    "accuracy": "accuracy",
    "worst_case_accuracy": "worst-case accuracy",
    "target_success_rate": "target success rate",
    "cam_drift": "CAM drift",
    "transfer_worst_case_accuracy": "black-box (transfer) worst-case accuracy",
}
PP = "pp"
DRIFT = "drift"
DROP = "drop"
RISE = "rise"


THRESHOLD_FLOOR = 0.0
PP_CEILING = 100.0  # a change of a percentage can be at most 100 pp
DRIFT_CEILING = 2.0  # CAM drift = 1 − correlation ∈ [0, 2]


@dataclass(frozen=True)
class ThresholdSpec:
    """How one threshold is offered (form label, unit, CLI flag, bounds); declared once in Thresholds below."""

    label: str
    unit: str  # "pp" (percentage points) or "drift" (1 − correlation)
    flag: str
    where: str = ""  # "at each ε": the metric is compared per ε
    name: str = ""
    default: float | None = None

    @property
    def ceiling(self) -> float:
        return DRIFT_CEILING if self.unit == DRIFT else PP_CEILING

    @property
    def unit_text(self) -> str:
        return " pp" if self.unit == PP else " (drift: 1 − correlation)"

    def describe(self) -> str:
        where = f" {self.where}" if self.where else ""
        return f"{self.label}{where}: the largest allowed, in {self.unit} (default {self.default:g}; none: not checked)"


def _threshold(default: float, *, label: str, unit: str, flag: str, where: str = "") -> float:
    spec = ThresholdSpec(label=label, unit=unit, flag=flag, where=where)
    return field(default=default, metadata={"threshold": spec})


@dataclass(frozen=True)
class Thresholds:
    """The largest change each metric may make before a run counts as regressed (None: not checked).

    The one declaration of the thresholds: the API's model, the CLI's flags, the dashboard's form and pages
    and the README take their names, labels, units, defaults and bounds from THRESHOLD_SPECS.
    """

    clean_accuracy_drop_pp: float | None = _threshold(
        2.0, label="Clean accuracy drop", unit=PP, flag="--max-clean-drop"
    )
    accuracy_drop_pp: float | None = _threshold(
        5.0, label="FGSM accuracy drop", unit=PP, where="at each ε", flag="--max-accuracy-drop"
    )
    worst_case_drop_pp: float | None = _threshold(
        5.0, label="Worst-case accuracy drop", unit=PP, where="at each ε", flag="--max-worst-case-drop"
    )
    robust_auc_drop_pp: float | None = _threshold(
        3.0, label="Robust AUC drop", unit=PP, flag="--max-auc-drop"
    )
    target_success_rise_pp: float | None = _threshold(
        5.0, label="Target success rise", unit=PP, where="at each targeted ε", flag="--max-target-rise"
    )
    cam_drift_rise: float | None = _threshold(
        0.10, label="CAM drift rise", unit=DRIFT, flag="--max-drift-rise"
    )
    # Only audits with transfer sources measure it: the worst case over those sources, attack `all`.
    transfer_worst_case_drop_pp: float | None = _threshold(
        5.0,
        label="Transfer worst-case accuracy drop",
        unit=PP,
        where="at the ranking ε",
        flag="--max-transfer-drop",
    )

    @staticmethod
    def ceiling(name: str) -> float:
        """The largest value threshold `name` accepts (the smallest is THRESHOLD_FLOOR)."""
        return THRESHOLD_SPECS[name].ceiling

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None:
                continue
            ceiling = self.ceiling(item.name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or not THRESHOLD_FLOOR <= value <= ceiling
            ):
                unit = " percentage points" if THRESHOLD_SPECS[item.name].unit == PP else ""
                raise ConfigError(
                    f"threshold {item.name} must be a number in [{THRESHOLD_FLOOR:g}, {ceiling:g}]"
                    f"{unit}, got {value!r}"
                )
            object.__setattr__(self, item.name, float(value))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Thresholds:
        """Thresholds from JSON; omitted keys keep their defaults, unknown keys are refused."""
        data = dict(data or {})
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown threshold(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


def report_version(document: dict[str, Any]) -> int:
    """The report's schema_version (documents written before it existed are version 1)."""
    version = document.get("schema_version")
    return version if isinstance(version, int) and not isinstance(version, bool) else 1


def worst_case_accuracy(
    document: dict[str, Any], *, fgsm_fallback: bool = False
) -> dict[float, float | None]:
    """Worst-case robust accuracy per ε (keys rounded like every ε here), in the order of the FGSM ε list.

    Version 2: summary.worst_case_accuracy, aligned with the `fgsm` points (or the `robust` section's points).
    Version 1 has no worst case: empty, or with `fgsm_fallback` the FGSM accuracy (its only attack).
    """
    fgsm = document.get("fgsm") or []
    summary = document.get("summary") or {}
    worst = summary.get("worst_case_accuracy")
    if isinstance(worst, list) and len(worst) == len(fgsm) and fgsm:
        return {_eps(p["eps"]): _number(a) for p, a in zip(fgsm, worst, strict=True)}
    robust = document.get("robust") or {}
    if robust.get("points"):
        return {_eps(p["eps"]): _number(p.get("accuracy")) for p in robust["points"]}
    if fgsm_fallback and report_version(document) < 2:
        return {_eps(p["eps"]): _number(p.get("accuracy")) for p in fgsm}
    return {}


def worst_case_attacks(document: dict[str, Any]) -> list[str]:
    """The attacks the worst case is taken over (["fgsm"] for a version 1 report)."""
    summary = document.get("summary") or {}
    names = summary.get("worst_case_attacks") or (document.get("robust") or {}).get("attacks")
    if names:
        return [str(name) for name in names]
    return ["fgsm"] if report_version(document) < 2 else []


def sanity_verdict(document: dict[str, Any]) -> str | None:
    """passed or suspicious; None for a report without sanity checks (version 1)."""
    verdict = (document.get("summary") or {}).get("sanity_verdict")
    if verdict is None:
        verdict = (document.get("sanity") or {}).get("verdict")
    return str(verdict) if verdict is not None else None


def failed_checks(document: dict[str, Any]) -> list[dict[str, str]]:
    """The sanity checks that failed, as {"name", "detail"} in the report's order."""
    checks = (document.get("sanity") or {}).get("checks") or []
    return [
        {"name": str(check.get("name")), "detail": str(check.get("detail") or "")}
        for check in checks
        if isinstance(check, dict) and check.get("status") == "failed"
    ]


def check_title(name: str) -> str:
    """A sanity check's title as services.sanity declares it (imported here only: it needs torch)."""
    from services.sanity import CHECKS_BY_NAME

    check = CHECKS_BY_NAME.get(name)
    return check.title if check is not None else name


@dataclass(frozen=True)
class Metrics:
    """What a verdict compares, read from one report.json document."""

    clean_accuracy: float | None
    robust_auc: float | None
    accuracy: dict[float, float | None]  # FGSM accuracy per ε
    target_success: dict[float, float | None]  # targeted FGSM target success rate per ε
    cam_drift: float | None
    # the per-sample worst case over every attack, per ε (empty for a version 1 report: FGSM only)
    worst_case: dict[float, float | None] = field(default_factory=dict)
    worst_case_auc: float | None = None
    report_version: int = 1
    sanity_verdict: str | None = None  # passed, suspicious; None without sanity checks (version 1)
    failed_checks: tuple[str, ...] = ()  # names of the sanity checks that failed
    failed_details: tuple[str, ...] = ()  # and their details, in the same order

    @classmethod
    def from_report(cls, document: dict[str, Any]) -> Metrics:
        summary = document.get("summary") or {}
        targeted = document.get("targeted_fgsm") or {}
        failed = failed_checks(document)
        return cls(
            clean_accuracy=_number(summary.get("clean_accuracy")),
            robust_auc=_number(summary.get("robust_auc")),
            accuracy={_eps(p["eps"]): _number(p.get("accuracy")) for p in document.get("fgsm") or []},
            target_success={
                _eps(p["eps"]): _number(p.get("target_success_rate")) for p in targeted.get("points") or []
            },
            cam_drift=_number(summary.get("cam_drift")),
            worst_case=worst_case_accuracy(document),
            worst_case_auc=_number(summary.get("worst_case_auc")),
            report_version=report_version(document),
            sanity_verdict=sanity_verdict(document),
            failed_checks=tuple(check["name"] for check in failed),
            failed_details=tuple(check["detail"] for check in failed),
        )

    @property
    def suspicious(self) -> bool:
        return self.sanity_verdict == SUSPICIOUS

    def describe_failures(self) -> str:
        """ "gradients_usable (Gradients are usable) — 40 samples (83.3 %) with a zero input gradient, …"."""
        if not self.failed_checks:
            return "the sanity verdict is suspicious"
        return "; ".join(
            f"{name} ({check_title(name)}) — {detail}" if detail else f"{name} ({check_title(name)})"
            for name, detail in zip(self.failed_checks, self.failed_details, strict=True)
        )


def _eps(value: float) -> float:
    return round(float(value), EPS_DIGITS)


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


@dataclass(frozen=True)
class MetricRow:
    """One line of the diff table."""

    metric: str  # clean_accuracy, robust_auc, accuracy, target_success_rate, cam_drift
    eps: float | None
    baseline: float | None
    candidate: float | None
    delta: float | None  # candidate − baseline, in `unit`
    threshold: float | None
    unit: str  # "pp" (values are percentages) or "drift"
    direction: str  # "drop" or "rise": which way is worse
    regressed: bool

    def describe(self) -> str:
        """ "accuracy at ε=8/255 fell 18.6 pp (49.2 → 30.6; allowed 5 pp)"."""
        if self.delta is None:
            raise ValueError(
                f"{self.metric} was not compared (a value is missing): there is no change to describe"
            )
        where = f" at ε={self.eps * 255:g}/255" if self.eps is not None else ""
        verb = "fell" if self.direction == DROP else "rose"
        suffix = " pp" if self.unit == PP else ""
        digits = _digits(self.unit)
        return (
            f"{METRIC_NAMES.get(self.metric, self.metric)}{where} {verb} {abs(self.delta):.{digits}f}{suffix} "
            f"({self.baseline:.{digits}f} → {self.candidate:.{digits}f}; allowed {self.threshold:g}{suffix})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _digits(unit: str) -> int:
    return 1 if unit == PP else 3


def _row(
    metric: str,
    eps: float | None,
    baseline: float | None,
    candidate: float | None,
    threshold: float | None,
    unit: str,
    direction: str,
) -> MetricRow:
    scale = 100.0 if unit == PP else 1.0
    base = None if baseline is None else baseline * scale
    cand = None if candidate is None else candidate * scale
    delta = None if base is None or cand is None else cand - base
    worse = None if delta is None else (-delta if direction == DROP else delta)
    regressed = worse is not None and threshold is not None and worse > threshold + TOLERANCE
    return MetricRow(metric, eps, base, cand, delta, threshold, unit, direction, regressed)


def compare_metrics(baseline: Metrics, candidate: Metrics, thresholds: Thresholds) -> list[MetricRow]:
    """Every compared metric: clean accuracy, robust AUC, accuracy per ε, worst-case accuracy per ε (when
    either report has one), target success per ε, CAM drift."""
    t = thresholds
    rows = [
        _row(
            "clean_accuracy",
            None,
            baseline.clean_accuracy,
            candidate.clean_accuracy,
            t.clean_accuracy_drop_pp,
            PP,
            DROP,
        ),
        _row("robust_auc", None, baseline.robust_auc, candidate.robust_auc, t.robust_auc_drop_pp, PP, DROP),
    ]
    for eps in sorted(baseline.accuracy.keys() | candidate.accuracy.keys()):
        rows.append(
            _row(
                "accuracy",
                eps,
                baseline.accuracy.get(eps),
                candidate.accuracy.get(eps),
                t.accuracy_drop_pp,
                PP,
                DROP,
            )
        )
    for eps in sorted(baseline.worst_case.keys() | candidate.worst_case.keys()):
        rows.append(
            _row(
                "worst_case_accuracy",
                eps,
                baseline.worst_case.get(eps),
                candidate.worst_case.get(eps),
                t.worst_case_drop_pp,
                PP,
                DROP,
            )
        )
    for eps in sorted(baseline.target_success.keys() | candidate.target_success.keys()):
        rows.append(
            _row(
                "target_success_rate",
                eps,
                baseline.target_success.get(eps),
                candidate.target_success.get(eps),
                t.target_success_rise_pp,
                PP,
                RISE,
            )
        )
    if baseline.cam_drift is not None or candidate.cam_drift is not None:
        rows.append(
            _row("cam_drift", None, baseline.cam_drift, candidate.cam_drift, t.cam_drift_rise, DRIFT, RISE)
        )
    return rows


def transfer_row(
    baseline: TransferOutcome | None,
    candidate: TransferOutcome,
    thresholds: Thresholds,
    warnings: list[str],
) -> MetricRow:
    """The black-box worst-case accuracy at the ranking ε, candidate against baseline (listed without a verdict,
    with a warning, when the baseline measured none with the same sources)."""
    comparable = baseline is not None and baseline.comparable_with(candidate)
    if baseline is None:
        warnings.append("the baseline measured no transfer robustness: the transfer metric is listed only")
    elif not comparable:
        warnings.append(
            "the baseline's transfer job used other sources: the transfer metric is listed without a verdict"
        )
    shared = candidate.worst_case.keys() & (baseline.worst_case.keys() if comparable and baseline else set())
    eps = ranking_eps(shared or candidate.worst_case.keys())
    base = baseline.worst_case.get(eps) if comparable and baseline and eps is not None else None
    cand = candidate.worst_case.get(eps) if eps is not None else None
    return _row(
        "transfer_worst_case_accuracy", eps, base, cand, thresholds.transfer_worst_case_drop_pp, PP, DROP
    )


@dataclass(frozen=True)
class JobResult:
    """One evaluation job of an audit run (or the baseline's), as the verdict needs it."""

    job_id: int
    model_id: int
    model_name: str
    model_version: str
    status: str
    error: str | None = None
    report: dict[str, Any] | None = None
    run_id: int | None = None  # the audit run the job belongs to, if any
    # the run's transfer job with this model as the target (None: the run measured no transfer robustness)
    transfer: TransferOutcome | None = None

    def label(self) -> str:
        return f"job {self.job_id} ({self.model_name} {self.model_version})"

    def summary(self) -> dict[str, Any]:
        metrics = Metrics.from_report(self.report) if self.report else None
        return {
            "job_id": self.job_id,
            "run_id": self.run_id,
            "model_id": self.model_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "clean_accuracy": metrics.clean_accuracy if metrics else None,
            "robust_auc": metrics.robust_auc if metrics else None,
            "worst_case_auc": metrics.worst_case_auc if metrics else None,
            "sanity_verdict": metrics.sanity_verdict if metrics else None,
            "failed_checks": list(metrics.failed_checks) if metrics else [],
            **({"transfer_job_id": self.transfer.transfer_id} if self.transfer else {}),
        }


@dataclass(frozen=True)
class Verdict:
    """The outcome of a run: verdict, a one-paragraph reason, and the diff table per candidate job."""

    verdict: str
    reason: str
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _usable_report(job: JobResult) -> dict[str, Any] | None:
    """The job's report if the job succeeded (and has one), else None."""
    return job.report if job.status == SUCCEEDED else None


def _eps_warnings(baseline: Metrics, candidate: Metrics) -> list[str]:
    warnings = []
    if baseline.accuracy.keys() != candidate.accuracy.keys():
        warnings.append(
            "the baseline and this run swept different ε values: robust AUC averages over each one's own ε "
            "range, and an ε present on one side only is listed without a verdict"
        )
    if bool(baseline.worst_case) != bool(candidate.worst_case):
        side = "baseline" if not baseline.worst_case else "candidate"
        warnings.append(
            f"the {side} report is version 1 (FGSM only): worst-case accuracy is listed without a verdict"
        )
    if baseline.suspicious:
        warnings.append(
            f"the baseline's evaluation is suspicious (sanity checks failed: "
            f"{', '.join(baseline.failed_checks) or 'see its report'}): its numbers may overstate robustness"
        )
    return warnings


NO_BASELINE = "no earlier passing run to compare with: this run is the baseline of the next ones"


def judge(
    pairs: Sequence[tuple[JobResult, JobResult | None]],
    thresholds: Thresholds,
    errors: Sequence[str] = (),
    no_baseline_reason: str = NO_BASELINE,
) -> Verdict:
    """Decide a run: each (candidate job, its baseline job or None) pair is compared metric by metric.

    error — `errors` were given, or a candidate or baseline job did not succeed (each is named);
    suspicious — a candidate's report failed a sanity check (each failed check is named), with or without a
    baseline; regressed — some metric moved beyond its threshold; baseline — no candidate had a baseline
    (the reason is `no_baseline_reason`); passed — otherwise.
    """
    problems = list(errors)
    suspicious: list[str] = []
    comparisons = []
    for candidate, baseline in pairs:
        entry: dict[str, Any] = {
            "candidate": candidate.summary(),
            "baseline": baseline.summary() if baseline else None,
            "rows": [],
            "regressed": False,
            "warnings": [],
        }
        comparisons.append(entry)
        candidate_report = _usable_report(candidate)
        if candidate_report is None:
            problems.append(
                f"{candidate.label()} {OUTCOME_WORDS.get(candidate.status, candidate.status)}"
                + (f": {candidate.error}" if candidate.error else "")
            )
            continue
        transfer_problem = candidate.transfer.problem() if candidate.transfer is not None else None
        if transfer_problem:
            problems.append(f"{candidate.label()}: {transfer_problem}")
            continue
        candidate_metrics = Metrics.from_report(candidate_report)
        if candidate_metrics.suspicious:
            suspicious.append(
                f"{candidate.label()}: sanity checks failed: {candidate_metrics.describe_failures()}"
            )
        if baseline is None:
            continue
        baseline_report = _usable_report(baseline)
        if baseline_report is None:
            problems.append(f"baseline {baseline.label()} is {baseline.status}, not succeeded")
            continue
        base, cand = Metrics.from_report(baseline_report), candidate_metrics
        rows = compare_metrics(base, cand, thresholds)
        warnings = _eps_warnings(base, cand)
        if candidate.transfer is not None:
            rows.append(transfer_row(baseline.transfer, candidate.transfer, thresholds, warnings))
        entry.update(
            rows=[row.to_dict() for row in rows],
            regressed=any(row.regressed for row in rows),
            warnings=warnings,
        )
    if problems:
        return Verdict(ERROR, "; ".join(problems), comparisons, problems)
    regressed = [entry for entry in comparisons if entry["regressed"]]
    regression = ""
    if regressed:
        count = sum(row["regressed"] for entry in regressed for row in entry["rows"])
        lines = [
            f"{entry['candidate']['model_name']} {entry['candidate']['model_version']}: "
            + "; ".join(MetricRow(**row).describe() for row in entry["rows"] if row["regressed"])
            for entry in regressed
        ]
        regression = f"{count} metric(s) regressed — " + " | ".join(lines)
    if suspicious:  # untrustworthy numbers: neither a pass nor a baseline, whatever they say
        reason = " | ".join(suspicious) + (f" | also {regression}" if regression else "")
        return Verdict(SUSPICIOUS, reason, comparisons)
    if regressed:
        return Verdict(REGRESSED, regression, comparisons)
    compared = [entry for entry in comparisons if entry["baseline"] is not None]
    if not compared:
        return Verdict(BASELINE, no_baseline_reason, comparisons)
    checked = sum(len(entry["rows"]) for entry in compared)
    against = ", ".join(f"job {entry['baseline']['job_id']}" for entry in compared)
    return Verdict(
        PASSED, f"all {checked} compared metrics within their thresholds (baseline {against})", comparisons
    )


THRESHOLD_SPECS: dict[str, ThresholdSpec] = {
    item.name: replace(item.metadata["threshold"], name=item.name, default=item.default)
    for item in fields(Thresholds)
}
