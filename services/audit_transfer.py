"""The transfer robustness an audit run measures: its candidate's black-box worst case over fixed sources.

Read by services.audit_verdict, which compares it at the ranking ε with the baseline run's. Pure (no torch).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from services.job_states import SUCCEEDED

# The ε a leaderboard ranks at when every compared job swept it (api.services.report_view ranks with it too),
# and the transfer metric is compared at when both sides have it.
RANKING_EPS = 8 / 255
EPS_DIGITS = 9  # the same ε parsed twice is one float; closer than 1e-9 is the same point


def eps_key(value: float) -> float:
    return round(float(value), EPS_DIGITS)


def ranking_eps(eps: Iterable[float]) -> float | None:
    """8/255 if present, else the largest nonzero ε (None when there is none)."""
    keys = {eps_key(e) for e in eps}
    if eps_key(RANKING_EPS) in keys:
        return eps_key(RANKING_EPS)
    nonzero = [e for e in keys if e > 0]
    return max(nonzero) if nonzero else None


@dataclass(frozen=True)
class TransferOutcome:
    """One transfer job of an audit run, seen from one target model: its status and the target's worst case
    (per sample over the other sources and every attack, `all`) per ε, as fractions."""

    transfer_id: int
    status: str
    source_ids: tuple[int, ...]
    error: str | None = None
    worst_case: dict[float, float] = field(default_factory=dict)

    def problem(self) -> str | None:
        """Why the run cannot be judged on it (the job did not succeed or has no worst case), else None."""
        if self.status != SUCCEEDED:
            words = {"failed": "failed", "cancelled": "was cancelled", "queued": "never started"}
            reason = f": {self.error}" if self.error else ""
            return f"transfer job {self.transfer_id} {words.get(self.status, 'did not finish')}{reason}"
        if not self.worst_case:
            return f"transfer job {self.transfer_id} has no worst case for this model (no other source)"
        return None

    def comparable_with(self, other: TransferOutcome) -> bool:
        """Measured against the same sources (the ε lists may differ: compared at a shared ε)."""
        return set(self.source_ids) == set(other.source_ids)
