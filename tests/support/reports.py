"""Comparing report.json documents across runs of the same evaluation."""

from __future__ import annotations


def comparable_report(document: dict) -> dict:
    """A report.json document without what legitimately differs between runs of the same evaluation:
    timing, and the model/dataset `source` (a file path in-process, the registered name in the service)."""
    kept = {key: value for key, value in document.items() if key != "timing"}
    for part in ("model", "dataset"):
        kept[part] = {key: value for key, value in kept[part].items() if key != "source"}
    return kept
