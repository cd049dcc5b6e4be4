"""Evaluation options shared by `advaudit evaluate` (local) and `advaudit jobs submit` / `audits add` (server).

Every flag, its help and its default come from services.specs.OPTIONS, where each option is declared once.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from services.specs import OPTIONS, EvaluationConfig, Option


def floats(text: str) -> tuple[float, ...]:
    """argparse type: comma-separated numbers."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


_ARG_TYPES = {"int": int, "number": float}


def add_evaluation_options(p: argparse.ArgumentParser, options: Sequence[Option] = OPTIONS) -> None:
    """One flag per declared option (kebab-case of its report.json config key); `options`: another
    declaration of the same kind (services.transfer_specs.TRANSFER_OPTIONS)."""
    for option in options:
        if option.kind == "flag":
            p.add_argument(option.flag, action="store_true", help=option.describe())
        else:
            p.add_argument(
                option.flag,
                default=None,
                type=_ARG_TYPES.get(option.kind, str),
                choices=(option.choices or None) if option.kind == "choice" else None,
                help=option.describe(),
                metavar=option.metavar if option.kind in ("int", "number", "names") else None,
            )


def config_from_args(
    args: argparse.Namespace,
    options: Sequence[Option] = OPTIONS,
    config_type: Callable[..., Any] = EvaluationConfig,
) -> Any:
    """The validated config (EvaluationConfig unless told) of the given flags, the rest at their declared
    defaults (ConfigError)."""
    given = {option.name: getattr(args, option.name) for option in options}
    return config_type(
        **{name: value for name, value in given.items() if value is not None and value is not False}
    )
