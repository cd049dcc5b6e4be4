"""Evaluation options as frozen value types, with the parsing and validation rules in one place."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction

from services.errors import ConfigError
from services.limits import MAX_EPS_VALUES

DEFAULT_EPS: tuple[float, ...] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255)
DEFAULT_CAM_EPS = 8 / 255
TARGET_POLICIES = ("class:K", "random", "least-likely", "next")
PRECISIONS = ("fp32", "bf16")


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


def parse_eps_list(text: str | list | tuple, what: str = "the ε list") -> tuple[float, ...]:
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
class EvaluationConfig:
    """Every option of one evaluation; the CLI, the API and the worker all build this."""

    eps: tuple[float, ...] = DEFAULT_EPS
    targeted: TargetPolicy | None = None
    targeted_eps: tuple[float, ...] | None = None  # None: same as eps
    cam: str = "auto"  # "auto", "none" or a module path such as "features.6"
    cam_eps: float = DEFAULT_CAM_EPS
    cam_samples: int = 16
    triptychs: int = 4
    limit: int | None = None
    batch_size: int = 128
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    seed: int = 0
    save_adversarial: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", parse_eps_list(self.eps, "eps"))
        if isinstance(self.targeted, str):
            object.__setattr__(self, "targeted", TargetPolicy.parse(self.targeted))
        if self.targeted_eps is not None:
            if self.targeted is None:
                raise ConfigError("targeted-eps was given without a targeted policy: add --targeted POLICY")
            object.__setattr__(self, "targeted_eps", parse_eps_list(self.targeted_eps, "targeted_eps"))
        object.__setattr__(self, "cam_eps", parse_eps_value(self.cam_eps))
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose fp32 or bf16")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be ≥ 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be ≥ 1, got {self.limit}")
        if self.cam_samples < 0 or self.triptychs < 0:
            raise ConfigError("cam-samples and triptychs must be ≥ 0")
        if not self.cam.strip():
            raise ConfigError("cam must be 'auto', 'none' or a layer path")

    @property
    def sweep_targeted_eps(self) -> tuple[float, ...]:
        return self.targeted_eps if self.targeted_eps is not None else self.eps

    def to_dict(self) -> dict:
        """JSON-ready form, as written into report.json's `config`."""
        data = asdict(self)
        data["eps"] = list(self.eps)
        data["targeted"] = str(self.targeted) if self.targeted else None
        data["targeted_eps"] = list(self.sweep_targeted_eps) if self.targeted else None
        return data
