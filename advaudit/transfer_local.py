"""`advaudit transfer --local`: the transfer matrix in this process, as the API would answer it."""

from __future__ import annotations

from typing import Any

from advaudit.console import progress_bar
from services.checkpoints import load_model
from services.datasets import load_dataset
from services.evaluation_setup import resolve_device
from services.transfer import run_transfer
from services.transfer_specs import ModelShape, TransferConfig, check_compatible


def run_local(
    sources: list[str], targets: list[str], dataset_source: str, config: TransferConfig
) -> dict[str, Any]:
    """Load the models and the dataset, refuse misfits, compute the matrix; the API's results shape (models
    numbered in the order given, a model given in both roles being one model)."""
    dataset = load_dataset(dataset_source)
    device = resolve_device(config.device)
    given = list(dict.fromkeys([*sources, *targets]))
    ids = {text: index for index, text in enumerate(given, start=1)}
    loaded = {text: load_model(text, input_shape=dataset.info.input_shape) for text in given}
    check_compatible(
        [ModelShape(text, tuple(m.info.input_shape), m.info.num_classes) for text, m in loaded.items()],
        dataset_source,
        tuple(dataset.info.input_shape),
        dataset.info.num_classes,
    )
    n = min(len(dataset), config.limit) if config.limit else len(dataset)
    with progress_bar("transfer") as update:
        for model in loaded.values():
            model.to(device)
        result = run_transfer(
            {str(ids[t]): loaded[t].module for t in sources},
            {str(ids[t]): loaded[t].module for t in targets},
            dataset.batches(config.batch_size, limit=n),
            num_samples=n,
            eps=config.eps,
            attacks=config.attacks,
            pgd=config.pgd,
            pgd_examples=config.pgd_examples,
            device=device,
            precision=config.precision,
            seed=config.seed,
            progress=lambda done, total: update("matrix", done, total),
        )
    cells, worst = [], []
    for p in result.points():
        values = {
            "target_model_id": int(p.target),
            "attack": p.attack,
            "eps": p.eps,
            "accuracy": p.accuracy,
            "success_rate": p.success_rate,
            "n": p.n,
        }
        if p.source is None:
            worst.append(values)
        else:
            cells.append(values | {"source_model_id": int(p.source), "white_box": p.source == p.target})

    def entries(texts: list[str]) -> list[dict[str, Any]]:
        return [{"id": ids[t], "name": t, "version": ""} for t in texts]

    return {
        "config": config.to_dict(),
        "sources": entries(sources),
        "targets": entries(targets),
        "cells": cells,
        "worst_case": worst,
    }
