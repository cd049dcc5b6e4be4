"""Evaluation options as frozen value types, with the parsing and validation rules in one place."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from fractions import Fraction
from typing import Any, TypeVar

from services.attack_specs import ATTACKS, LOSSES, NORMS, AttackSpec, SanityProbe
from services.errors import ConfigError
from services.limits import MAX_EPS_VALUES

DEFAULT_EPS: tuple[float, ...] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255)
DEFAULT_CAM_EPS = 8 / 255
TARGET_POLICIES = ("class:K", "random", "least-likely", "next")
PRECISIONS = ("fp32", "bf16")
INFERENCE_LAYOUTS = ("auto", "model")  # services.inference_layout
FEATURE_MODES = ("auto", "none")  # services.features
# The attacks of a default run: FGSM and PGD (iterative, white-box); fast on the demo. The sanity checks flag a
# model that masks its gradients; add square (score-based, black-box: it needs no gradient) for a worst case
# that sees through the mask.
DEFAULT_ATTACKS: tuple[str, ...] = ("fgsm", "pgd")


def parse_names(text: str | Sequence[str], what: str, choices: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated (or list) choice of names, e.g. `fgsm,pgd`; kept in the given order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(str(item).strip().lower() for item in items if str(item).strip())
    if not names:
        raise ConfigError(f"{what} is empty: choose from {', '.join(choices)}")
    unknown = [name for name in names if name not in choices]
    if unknown:
        raise ConfigError(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(choices)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{what} repeats a name: {', '.join(names)}")
    return names


def parse_layer_paths(text: str, what: str) -> tuple[str, ...]:
    """`features.2, layer3` → ("features.2", "layer3"): comma-separated module paths, none repeated."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if len(set(names)) != len(names):
        raise ConfigError(f"{what} repeats a layer: {', '.join(names)}")
    return names


def parse_eps_value(text: str | float | int) -> float:
    """One ε: a number or a fraction such as `8/255`, in [0, 1] pixel units."""
    if isinstance(text, bool):
        raise ConfigError(f"ε must be a number, got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        raw = text.strip()
        try:
            value = float(Fraction(raw)) if "/" in raw else float(raw)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"cannot read ε {text!r}: use a number or a fraction such as 8/255") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"ε {text!r} is outside [0, 1]: ε is in pixel units of inputs scaled to [0, 1]")
    return value


def parse_eps_list(text: str | Sequence[str | float], what: str = "the ε list") -> tuple[float, ...]:
    """A comma-separated (or list) ε sweep, e.g. `0,1/255,2/255,8/255`; kept in the given order.

    The one parser of every ε list, whatever its form, so the MAX_EPS_VALUES limit holds for all of them.
    """
    items = [part for part in text.split(",") if part.strip()] if isinstance(text, str) else list(text)
    if not items:
        raise ConfigError(f"{what} is empty: give at least one value, e.g. 0,2/255,8/255")
    if len(items) > MAX_EPS_VALUES:
        raise ConfigError(f"{what} has {len(items)} values; at most {MAX_EPS_VALUES} are allowed")
    values = tuple(parse_eps_value(item) for item in items)
    if len(set(values)) != len(values):
        raise ConfigError(f"{what} repeats a value: {list(items)}")
    return values


@dataclass(frozen=True)
class TargetPolicy:
    """How targeted FGSM picks each sample's target class."""

    kind: str  # "class", "random", "least-likely" or "next"
    target_class: int | None = None

    @classmethod
    def parse(cls, text: str) -> TargetPolicy:
        raw = text.strip().lower()
        if raw in ("random", "least-likely", "next"):
            return cls(raw)
        if raw.startswith("class:"):
            try:
                k = int(raw.removeprefix("class:"))
            except ValueError:
                raise ConfigError(f"targeted policy {text!r}: class:K needs an integer K") from None
            if k < 0:
                raise ConfigError(f"targeted policy {text!r}: the class index must be ≥ 0")
            return cls("class", k)
        raise ConfigError(f"unknown targeted policy {text!r}; choose one of {', '.join(TARGET_POLICIES)}")

    def __str__(self) -> str:
        return f"class:{self.target_class}" if self.kind == "class" else self.kind


@dataclass(frozen=True)
class Option:
    """How one evaluation option is offered: the CLI flag, the API field, the form field, the README row.

    Declared once, in EvaluationConfig's field table below; its default is the field's. Kinds: `eps_list`,
    `eps`, `policy` (targeted), `int`, `number` (a real number), `choice`, `names` (several of the choices,
    comma-separated), `flag` (a boolean) and `text`.
    """

    kind: str
    help: str
    label: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    max_length: int | None = None
    name: str = ""  # the field's name (snake_case: the report's config key, the API's key), filled in below
    default: object = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def metavar(self) -> str | None:
        """How the CLI help and the README name the flag's value."""
        return _METAVARS.get(self.kind)

    @property
    def default_text(self) -> str:
        """The default as a person writes it (`0,1/255,…`, `8/255`, `16`), empty when there is none."""
        if self.default is None or self.default is False:
            return ""
        if self.kind == "eps_list":
            assert isinstance(self.default, tuple)  # the field's ε tuple (DEFAULT_EPS)
            return ",".join(format_eps(value) for value in self.default)
        if self.kind == "eps":
            assert isinstance(self.default, (int, float))
            return format_eps(self.default)
        if self.kind == "names":
            assert isinstance(self.default, tuple)  # a tuple of names (DEFAULT_ATTACKS)
            return ",".join(self.default)
        return str(self.default)

    def describe(self) -> str:
        """The help text with its bounds, choices and default: what the CLI, the API and the README say."""
        extra = []
        if self.choices:
            extra.append((", ".join if self.kind == "names" else " or ".join)(self.choices))
        if self.minimum is not None or self.maximum is not None:
            low = "" if self.minimum is None else f"{self.minimum} ≤ "
            high = "" if self.maximum is None else f" ≤ {self.maximum}"
            extra.append(f"{low}{'x' if self.kind == 'number' else 'N'}{high}")
        if self.default_text:
            extra.append(f"default {self.default_text}")
        return f"{self.help} ({'; '.join(extra)})" if extra else self.help


_METAVARS = {
    "eps_list": "LIST",
    "eps": "E",
    "policy": "POLICY",
    "int": "N",
    "number": "X",
    "names": "A,B",
    "text": "TEXT",
}


def format_eps(value: float) -> str:
    """`8/255` for a multiple of 1/255, else the number itself."""
    scaled = value * 255
    if scaled == 0:
        return "0"
    if abs(scaled - round(scaled)) < 1e-9:
        return f"{round(scaled)}/255"
    return f"{value:g}"


_T = TypeVar("_T")


def _option(
    default: _T,
    *,
    kind: str,
    help: str,
    label: str,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
    max_length: int | None = None,
) -> _T:
    option = Option(
        kind=kind,
        help=help,
        label=label,
        minimum=minimum,
        maximum=maximum,
        choices=choices,
        max_length=max_length,
    )
    return field(default=default, metadata={"option": option})


@dataclass(frozen=True)
class EvaluationConfig:
    """Every option of one evaluation; the CLI, the API and the worker all build this.

    The one declaration of the options: their surfaces (argparse flags, the API's JobConfig, the dashboard's
    form, the README table) are derived from this field table through OPTIONS.
    """

    eps: tuple[float, ...] = _option(
        DEFAULT_EPS,
        kind="eps_list",
        label="ε list",
        help="ε values in [0, 1] pixel units, comma-separated; fractions such as 8/255 are fine",
    )
    targeted: TargetPolicy | None = _option(
        None,
        kind="policy",
        label="Targeted policy",
        help="also run targeted FGSM: class:K, random (seeded, never the true class), least-likely, "
        "next ((y+1) mod C)",
    )
    targeted_eps: tuple[float, ...] | None = _option(
        None,
        kind="eps_list",
        label="Targeted ε list",
        help="ε list of the targeted sweep (needs a targeted policy; default: the ε list)",
    )
    attacks: tuple[str, ...] = _option(
        DEFAULT_ATTACKS,
        kind="names",
        label="Attacks",
        choices=ATTACKS,
        help="the attacks, comma-separated; a sample counts as robust at ε only if every one of them failed "
        "on it: fgsm (one gradient), bim and pgd (iterative, white-box), square (score-based, black-box)",
    )
    norm: str = _option(
        "linf",
        kind="choice",
        label="Norm",
        choices=NORMS,
        help="threat model of bim and pgd: linf, or l2 with ε in L2 units of the [0, 1] image (fgsm and "
        "square are L∞ attacks and then count apart from the worst case)",
    )
    loss: str = _option(
        "ce",
        kind="choice",
        label="Loss",
        choices=LOSSES,
        help="loss bim and pgd ascend: ce (cross-entropy), dlr (the scale-invariant difference of logits "
        "ratio) or cw (the logit margin)",
    )
    steps: int = _option(10, kind="int", label="Steps", minimum=1, maximum=1_000, help="steps of bim and pgd")
    restarts: int = _option(
        1, kind="int", label="Restarts", minimum=1, maximum=100, help="random restarts of pgd"
    )
    step_size: float | None = _option(
        None,
        kind="number",
        label="Step size",
        minimum=0,
        maximum=10,
        help="step size α of bim and pgd, in the units of ε (default 2.5·ε/steps at each ε)",
    )
    queries: int = _option(
        100,
        kind="int",
        label="Queries",
        minimum=1,
        maximum=100_000,
        help="query budget of square per sample and ε (a sample stops once it is fooled)",
    )
    sanity_eps: float = _option(
        0.5,
        kind="eps",
        label="Sanity ε",
        help="the large L∞ ε at which the white-box attacks must bring accuracy down to chance (0 skips "
        "that check)",
    )
    sanity_tolerance: float = _option(
        0.01,
        kind="number",
        label="Sanity tolerance",
        minimum=0,
        maximum=1,
        help="fraction of the samples allowed to contradict an ordering check (iterative vs single-step, "
        "monotone in ε, white-box vs black-box, gradient vs noise, untargeted vs targeted)",
    )
    sanity_chance_margin: float = _option(
        0.1,
        kind="number",
        label="Chance margin",
        minimum=0,
        maximum=1,
        help="accuracy at the sanity ε may exceed chance (1/classes) by this much",
    )
    sanity_gradient_fraction: float = _option(
        0.05,
        kind="number",
        label="Gradient fraction",
        minimum=0,
        maximum=1,
        help="fraction of the samples allowed a zero, NaN or infinite input gradient, or saturated outputs",
    )
    cam: str = _option(
        "auto",
        kind="text",
        label="CAM layer",
        max_length=200,
        help="CAM audit: auto (CAM on a GAP→Linear head, else Grad-CAM on the last conv layer with a spatial "
        "map), none, or a module path such as features.6 for Grad-CAM (a layer whose map is 1×1 at the "
        "dataset's size is refused: its CAM would be constant)",
    )
    cam_eps: float = _option(DEFAULT_CAM_EPS, kind="eps", label="CAM ε", help="ε of the adversarial maps")
    cam_samples: int = _option(
        16, kind="int", label="CAM samples", minimum=0, maximum=10_000, help="images in the CAM gallery"
    )
    triptychs: int = _option(
        4,
        kind="int",
        label="Triptychs",
        minimum=0,
        maximum=1_000,
        help="clean + perturbation = adversarial pictures to draw",
    )
    features: str = _option(
        "auto",
        kind="choice",
        label="Features at depth",
        choices=FEATURE_MODES,
        help="features at depth: at low, mid and high conv stages (or the feature layers), the most active "
        "channels' top-activating dataset patches, an input optimised for each, and how far each depth's "
        "activations move under the CAM audit's attack; none skips them",
    )
    feature_layers: str | None = _option(
        None,
        kind="text",
        label="Feature layers",
        max_length=1000,
        help="module paths of the depths to look at, comma-separated, such as features.2,layer3 (default: "
        "low, mid and high conv stages picked from the architecture)",
    )
    feature_channels: int = _option(
        4,
        kind="int",
        label="Feature channels",
        minimum=1,
        maximum=16,
        help="channels per depth: those of the largest dataset-mean activation",
    )
    feature_samples: int = _option(
        512,
        kind="int",
        label="Feature samples",
        minimum=1,
        maximum=100_000,
        help="the first N samples scanned for top-activating patches (bounds the cost on large datasets)",
    )
    limit: int | None = _option(
        None, kind="int", label="Sample limit", minimum=1, help="evaluate the first N samples only"
    )
    batch_size: int = _option(
        128, kind="int", label="Batch size", minimum=1, maximum=65_536, help="samples per forward pass"
    )
    shards: int | None = _option(
        None,
        kind="int",
        label="Shards",
        minimum=1,
        maximum=10_000,
        help="cut the samples into this many shards of whole batches, each a task any worker can take, merged "
        "into exactly the unsharded report (default: one shard per ADVAUDIT_SHARD_SAMPLES samples on the "
        "service; one after another in the local CLI)",
    )
    device: str = _option(
        "auto", kind="text", label="Device", max_length=32, help="auto (CUDA if present), cpu, cuda or cuda:N"
    )
    precision: str = _option(
        "fp32",
        kind="choice",
        label="Precision",
        choices=PRECISIONS,
        help="bf16 autocasts the model (the loss stays fp32)",
    )
    channels_last: bool = _option(
        False, kind="flag", label="Channels-last", help="channels_last memory format (for CUDA)"
    )
    inference_layout: str = _option(
        "auto",
        kind="choice",
        label="Inference layout",
        choices=INFERENCE_LAYOUTS,
        help="memory layout of the passes that only read predictions: auto gives them a channels_last copy of "
        "a conv model without dilated convolutions on the CPU when it predicts what the model does on the "
        "first batch (about 2× faster on ResNets; the gradients and adversarial inputs stay the model's "
        "own), model keeps the model's layout",
    )
    seed: int = _option(
        0,
        kind="int",
        label="Seed",
        minimum=0,
        maximum=2**32 - 1,
        help="seeds the random target policy and the CAM sample choice",
    )
    save_adversarial: bool = _option(
        False,
        kind="flag",
        label="Save adversarial examples",
        help="also write the float32 adversarial inputs (adversarial.npz, lossless; N·C·H·W·6 bytes of host "
        "memory while running)",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", parse_eps_list(self.eps, "eps"))
        targeted: object = self.targeted  # the CLI and the API pass the policy as text, parsed here
        if isinstance(targeted, str):
            object.__setattr__(self, "targeted", TargetPolicy.parse(targeted))
        if self.targeted_eps is not None:
            if self.targeted is None:
                raise ConfigError("targeted-eps was given without a targeted policy: add --targeted POLICY")
            object.__setattr__(self, "targeted_eps", parse_eps_list(self.targeted_eps, "targeted_eps"))
        object.__setattr__(self, "cam_eps", parse_eps_value(self.cam_eps))
        object.__setattr__(self, "sanity_eps", parse_eps_value(self.sanity_eps))
        object.__setattr__(self, "attacks", parse_names(self.attacks, "attacks", ATTACKS))
        for name, choices in (("norm", NORMS), ("loss", LOSSES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; choose {' or '.join(choices)}")
        if self.norm == "l2" and "square" in self.attacks:
            raise ConfigError("square is an L∞ attack: drop it from the attacks, or use norm linf")
        if self.norm == "l2" and not {"bim", "pgd"} & set(self.attacks):
            raise ConfigError("norm l2 applies to bim and pgd: add one of them to the attacks")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose fp32 or bf16")
        if self.inference_layout not in INFERENCE_LAYOUTS:
            raise ConfigError(
                f"unknown inference layout {self.inference_layout!r}; choose {' or '.join(INFERENCE_LAYOUTS)}"
            )
        for option in OPTIONS:  # the declared bounds, for every surface alike
            if option.kind in ("int", "number") and getattr(self, option.name) is not None:
                _check_bounds(option, getattr(self, option.name))
        if not self.cam.strip():
            raise ConfigError("cam must be 'auto', 'none' or a layer path")
        if self.features not in FEATURE_MODES:
            raise ConfigError(f"unknown features {self.features!r}; choose {' or '.join(FEATURE_MODES)}")
        if self.feature_layers is not None:
            layers = parse_layer_paths(self.feature_layers, "feature_layers")
            if layers and self.features == "none":
                raise ConfigError("feature_layers was given with features none: drop one of them")
            object.__setattr__(self, "feature_layers", ",".join(layers) or None)

    @property
    def attack_specs(self) -> tuple[AttackSpec, ...]:
        """The iterative and black-box attacks (FGSM is the sweep itself)."""
        return tuple(
            AttackSpec(name, self.norm, self.loss, self.steps, self.restarts, self.step_size, self.queries)
            for name in self.attacks
            if name != "fgsm"
        )

    @property
    def worst_case_attacks(self) -> tuple[str, ...]:
        """The attacks whose per-sample worst case is the robust accuracy: those of the ε's threat model."""
        if self.norm == "l2":
            return tuple(name for name in self.attacks if name in ("bim", "pgd"))
        return self.attacks

    @property
    def sanity_probe(self) -> SanityProbe:
        # one FGSM step at a huge ε need not reach chance: the large-ε check needs an iterative attack
        iterative = bool({"bim", "pgd"} & set(self.attacks))
        return SanityProbe(large_eps=self.sanity_eps if iterative else 0.0, noise=self.norm == "linf")

    @property
    def sweep_targeted_eps(self) -> tuple[float, ...]:
        return self.targeted_eps if self.targeted_eps is not None else self.eps

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written into report.json's `config`."""
        data = asdict(self)
        data["eps"] = list(self.eps)
        data["attacks"] = list(self.attacks)
        data["targeted"] = str(self.targeted) if self.targeted else None
        data["targeted_eps"] = list(self.sweep_targeted_eps) if self.targeted else None
        return data


def _check_bounds(option: Option, value: object) -> None:
    if option.kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{option.name} must be a number, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{option.name} must be a whole number, got {value!r}")
    low, high = option.minimum, option.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (
            f"between {low} and {high}"
            if low is not None and high is not None
            else f"at least {low}"
            if low is not None
            else f"at most {high}"
        )
        raise ConfigError(f"{option.name} must be {bounds}, got {value}")


def _declared_options() -> tuple[Option, ...]:
    return tuple(
        replace(item.metadata["option"], name=item.name, default=item.default)
        for item in fields(EvaluationConfig)
    )


OPTIONS: tuple[Option, ...] = _declared_options()
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
