"""The transfer job's heat map as the dashboard draws it: one attack and one ε, sources × targets."""

from __future__ import annotations

from typing import Any


def colour(accuracy: float | None) -> str:
    """Red (0 %) through yellow to green (100 %): the target's accuracy, so red cells are where attacks transfer."""
    if accuracy is None:
        return "transparent"
    return f"hsl({round(120 * max(0.0, min(1.0, accuracy)))}, 70%, 78%)"


def _cell(point: dict[str, Any] | None, white_box: bool = False) -> dict[str, Any]:
    if point is None:
        return {"accuracy": None, "success_rate": None, "white_box": white_box, "colour": colour(None)}
    return {
        "accuracy": point["accuracy"],
        "success_rate": point["success_rate"],
        "white_box": white_box,
        "colour": colour(point["accuracy"]),
    }


def heat_map(results: dict[str, Any], attack: str | None, eps: str | None) -> dict[str, Any]:
    """Rows per source, a column per target, the worst-case row; `attack` and `eps` as chosen in the URL
    (unknown or missing ones fall back to the first attack and the largest ε)."""
    attacks = list(dict.fromkeys(cell["attack"] for cell in results["cells"]))
    eps_values = sorted({cell["eps"] for cell in results["cells"]})
    if not attacks:
        return {"attacks": [], "eps_values": [], "attack": None, "eps": None, "rows": [], "worst": []}
    chosen_attack = attack if attack in (*attacks, "all") else attacks[0]
    chosen_eps = next((e for e in eps_values if f"{e:.6g}" == eps), eps_values[-1])
    cells = {
        (c["source_model_id"], c["target_model_id"]): c
        for c in results["cells"]
        if c["attack"] == chosen_attack and c["eps"] == chosen_eps
    }
    worst = {
        w["target_model_id"]: w
        for w in results["worst_case"]
        if w["attack"] == chosen_attack and w["eps"] == chosen_eps
    }
    rows = []
    if chosen_attack != "all":
        for source in results["sources"]:
            row = [
                _cell(cells.get((source["id"], t["id"])), source["id"] == t["id"]) for t in results["targets"]
            ]
            rows.append({"model": source, "cells": row})
    return {
        "attacks": [*attacks, "all"],
        "eps_values": [{"value": e, "key": f"{e:.6g}"} for e in eps_values],
        "attack": chosen_attack,
        "eps": chosen_eps,
        "eps_key": f"{chosen_eps:.6g}",
        "rows": rows,
        "worst": [_cell(worst.get(t["id"])) for t in results["targets"]],
    }
