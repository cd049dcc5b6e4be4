"""The attacks' declarations, without torch: what the options, the report and the CLI need to name them.

The attacks themselves are in services/iterative.py, their orchestration over ε in services/robust.py.
"""

from __future__ import annotations

from dataclasses import dataclass

WHITE_BOX = ("fgsm", "bim", "pgd")
BLACK_BOX = ("square",)
ATTACKS = (*WHITE_BOX, *BLACK_BOX)
LOSSES = ("ce", "dlr", "cw")
NORMS = ("linf", "l2")
SQUARE_P_INIT = 0.8  # initial fraction of pixels a Square proposal changes (the reference default)


@dataclass(frozen=True)
class AttackSpec:
    """One iterative or black-box attack of a run, as configured."""

    name: str  # "bim", "pgd" or "square"
    norm: str = "linf"
    loss: str = "ce"
    steps: int = 10
    restarts: int = 1
    step_size: float | None = None  # α; None: 2.5·ε/steps
    queries: int = 100

    def alpha(self, eps: float) -> float:
        return self.step_size if self.step_size is not None else 2.5 * eps / self.steps

    def describe(self) -> dict[str, object]:
        """The attack's entry in the report (its points are added by the report)."""
        square = self.name == "square"
        return {
            "name": self.name,
            "norm": self.norm,
            "loss": "margin" if square else self.loss,
            "steps": None if square else self.steps,
            "restarts": self.restarts if self.name == "pgd" else 1,
            "step_size": None if square else self.step_size,  # None: 2.5·ε/steps
            "random_start": self.name == "pgd",
            "queries": self.queries if square else None,
        }


FGSM_ENTRY: dict[str, object] = {
    "name": "fgsm",
    "norm": "linf",
    "loss": "ce",
    "steps": 1,
    "restarts": 1,
    "step_size": None,
    "random_start": False,
    "queries": None,
}


@dataclass(frozen=True)
class SanityProbe:
    """What the sanity checks need measured during the sweep besides the attacks themselves."""

    large_eps: float = 0.5  # check 3: the white-box attacks at this ε should reach chance accuracy
    noise: bool = True  # check 5: random ±ε noise at the largest swept ε
