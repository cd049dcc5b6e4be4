"""The README's tables of evaluation options, audit thresholds and settings, rendered from their declarations.

`python -m advaudit.reference` rewrites them in README.md (between `<!-- BEGIN name -->` and
`<!-- END name -->`); tests/cli/test_catalogues.py fails when the README and a declaration disagree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from contracts.settings import Settings
from services.audit_verdict import THRESHOLD_SPECS
from services.specs import OPTIONS, Option
from services.transfer_specs import TRANSFER_OPTIONS

README = Path(__file__).resolve().parents[1] / "README.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def options_table(options: tuple[Option, ...] = OPTIONS) -> str:
    rows = ["| option (CLI flag · API `config` key) | meaning |", "| --- | --- |"]
    for option in options:
        if option.kind == "flag":
            flag = f"`{option.flag}`"
        elif option.kind == "choice":
            flag = f"`{option.flag} {'|'.join(option.choices)}`"
        else:
            flag = f"`{option.flag} {option.metavar}`"
        rows.append(f"| {_cell(flag)} · `{option.name}` | {_cell(option.describe())} |")
    return "\n".join(rows)


def thresholds_table() -> str:
    rows = ["| threshold (API key · CLI flag) | meaning | range |", "| --- | --- | --- |"]
    for name, spec in THRESHOLD_SPECS.items():
        rows.append(f"| `{name}` · `{spec.flag}` | {_cell(spec.describe())} | 0–{spec.ceiling:g} |")
    return "\n".join(rows)


def _default(field) -> str:
    if field.default_factory is not None:
        return "none"
    value = field.default
    if value is None:
        return "derived" if field.description and "default:" in field.description else "none"
    return f"`{value}`"


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        rows.append(
            f"| `ADVAUDIT_{name.upper()}` | {_cell(_default(field))} | {_cell(field.description or '')} |"
        )
    return "\n".join(rows)


def transfer_options_table() -> str:
    return options_table(TRANSFER_OPTIONS)


TABLES = {
    "options": options_table,
    "transfer-options": transfer_options_table,
    "thresholds": thresholds_table,
    "settings": settings_table,
}


def block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- BEGIN {name} -->\n)(?:.*?\n)?(<!-- END {name} -->)", re.S)


def render(text: str) -> str:
    """`text` (the README) with every generated table replaced by its current rendering."""
    for name, table in TABLES.items():
        pattern = block(name)
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- BEGIN {name} --> … <!-- END {name} --> block")
        text = pattern.sub(lambda match, table=table: f"{match[1]}{table()}\n{match[2]}", text)
    return text


def main() -> int:
    current = README.read_text()
    updated = render(current)
    if updated != current:
        README.write_text(updated)
        print(f"updated the generated tables in {README}")
    else:
        print("the README's generated tables are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
