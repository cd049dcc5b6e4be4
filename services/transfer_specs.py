"""Transfer-matrix options, declared once (as services/specs.py declares the evaluation's), without torch.

A transfer job crafts adversarial examples on each source model and evaluates them on each target model.
Its CLI flags, API `config` keys, dashboard form fields and README table all come from TRANSFER_OPTIONS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from services.attack_specs import AttackSpec
from services.errors import ConfigError
from services.specs import (
    DEFAULT_EPS,
    PRECISIONS,
    Option,
    _check_bounds,
    _option,
    parse_eps_list,
    parse_names,
)

TRANSFER_ATTACKS = ("fgsm", "pgd")  # the white-box attacks a source crafts with (L∞, cross-entropy)
ALL_ATTACKS = "all"  # the worst case over the attacks too, in the per-target worst case
PGD_EXAMPLES = ("first-fooling", "final")  # which PGD iterate the targets get (services.transfer.craft_pgd)
MAX_TRANSFER_MODELS = 8  # per role: the matrix holds up to 64 (source, target) pairs


@dataclass(frozen=True)
class TransferConfig:
    """Every option of one transfer job; the CLI, the API, the dashboard and the worker all build this."""

    eps: tuple[float, ...] = _option(
        DEFAULT_EPS,
        kind="eps_list",
        label="ε list",
        help="ε values in [0, 1] pixel units (L∞), comma-separated; fractions such as 8/255 are fine",
    )
    attacks: tuple[str, ...] = _option(
        TRANSFER_ATTACKS,
        kind="names",
        label="Attacks",
        choices=TRANSFER_ATTACKS,
        help="the attacks each source crafts with, comma-separated: fgsm (one gradient) and pgd (iterative, "
        "cross-entropy, random start)",
    )
    steps: int = _option(10, kind="int", label="Steps", minimum=1, maximum=1_000, help="steps of pgd")
    restarts: int = _option(
        1, kind="int", label="Restarts", minimum=1, maximum=100, help="random restarts of pgd"
    )
    step_size: float | None = _option(
        None,
        kind="number",
        label="Step size",
        minimum=0,
        maximum=10,
        help="step size α of pgd, in the units of ε (default 2.5·ε/steps at each ε)",
    )
    pgd_examples: str = _option(
        "final",
        kind="choice",
        label="PGD examples",
        choices=PGD_EXAMPLES,
        help="the pgd iterate the targets get: final (every step run: examples further past the source's "
        "boundary, which transfer better, so the black-box numbers are the stronger attack's) or first-fooling "
        "(the first that fooled the source, where the white-box sweep stops; a copy of the source then gets "
        "exactly the source's numbers)",
    )
    limit: int | None = _option(
        None, kind="int", label="Sample limit", minimum=1, help="use the first N samples only"
    )
    batch_size: int = _option(
        128, kind="int", label="Batch size", minimum=1, maximum=65_536, help="samples per forward pass"
    )
    device: str = _option(
        "auto", kind="text", label="Device", max_length=32, help="auto (CUDA if present), cpu, cuda or cuda:N"
    )
    precision: str = _option(
        "fp32",
        kind="choice",
        label="Precision",
        choices=PRECISIONS,
        help="bf16 autocasts the models (the loss stays fp32)",
    )
    seed: int = _option(
        0,
        kind="int",
        label="Seed",
        minimum=0,
        maximum=2**32 - 1,
        help="seeds pgd's random starts, per sample index (with a white-box evaluation's seed, the diagonal is "
        "its numbers)",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", parse_eps_list(self.eps, "eps"))
        object.__setattr__(self, "attacks", parse_names(self.attacks, "attacks", TRANSFER_ATTACKS))
        if self.pgd_examples not in PGD_EXAMPLES:
            raise ConfigError(
                f"unknown pgd_examples {self.pgd_examples!r}; choose {' or '.join(PGD_EXAMPLES)}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose {' or '.join(PRECISIONS)}")
        for option in TRANSFER_OPTIONS:
            if option.kind in ("int", "number") and getattr(self, option.name) is not None:
                _check_bounds(option, getattr(self, option.name))

    @property
    def pgd(self) -> AttackSpec:
        """PGD as the white-box evaluation runs it with the same steps, restarts and step size (L∞, CE)."""
        return AttackSpec("pgd", "linf", "ce", self.steps, self.restarts, self.step_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in the job's `config`."""
        data = asdict(self)
        data["eps"] = list(self.eps)
        data["attacks"] = list(self.attacks)
        return data


def _declared() -> tuple[Option, ...]:
    return tuple(
        replace(item.metadata["option"], name=item.name, default=item.default)
        for item in fields(TransferConfig)
    )


TRANSFER_OPTIONS: tuple[Option, ...] = _declared()


def check_roles(sources: list[str], targets: list[str]) -> None:
    """At least one source and one target, no model twice in a role, at most MAX_TRANSFER_MODELS each."""
    for role, names in (("source", sources), ("target", targets)):
        if not names:
            raise ConfigError(f"a transfer job needs at least one {role} model")
        if len(names) > MAX_TRANSFER_MODELS:
            raise ConfigError(
                f"at most {MAX_TRANSFER_MODELS} {role} models per transfer job, got {len(names)}"
            )
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ConfigError(f"{role} model(s) given twice: {', '.join(repeated)}")


@dataclass(frozen=True)
class ModelShape:
    """What the matrix needs to know of a model: how the user names it, its input shape and class count."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int


def check_compatible(
    models: list[ModelShape], dataset_name: str, input_shape: tuple[int, ...], num_classes: int
) -> None:
    """Every model takes the dataset's images and predicts the same classes (ConfigError otherwise): an
    example crafted on one must be an input of the others, and "misclassified" must mean the same."""
    for model in models:
        if tuple(model.input_shape) != tuple(input_shape):
            raise ConfigError(
                f"model {model.name} takes inputs of shape {tuple(model.input_shape)} (C, H, W) but dataset "
                f"{dataset_name} has images of shape {tuple(input_shape)}: every model of a transfer job must "
                "take the dataset's images"
            )
    counts = sorted({model.num_classes for model in models})
    if len(counts) > 1:
        named = ", ".join(f"{model.name} ({model.num_classes})" for model in models)
        raise ConfigError(
            f"the models of a transfer job must predict the same classes; class counts: {named}"
        )
    if counts and counts[0] < num_classes:
        raise ConfigError(
            f"dataset {dataset_name} has {num_classes} classes but the models predict only {counts[0]}"
        )
