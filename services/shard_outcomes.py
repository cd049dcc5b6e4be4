"""A shard's per-sample outcomes as one .npz document, and back: what a shard puts in the artifact store
and the merging worker reads. Only arrays (no pickles); the options come from the job's config."""

from __future__ import annotations

import io
from dataclasses import fields

import numpy as np
import torch

from services.errors import ShardError
from services.robust import RobustSweep, SanityCounts
from services.specs import EvaluationConfig
from services.sweep import SweepResult

FORMAT_VERSION = 1
_TENSORS = (
    "labels",
    "clean_pred",
    "clean_conf",
    "pred",
    "conf",
    "targets",
    "targeted_pred",
    "target_prob",
    "directions",
    "inputs",
    "targeted_directions",
)


def sweep_to_npz(sweep: SweepResult, first_index: int) -> bytes:
    """The outcomes of the sweep of samples first_index … first_index + len − 1, as .npz bytes."""
    arrays: dict[str, np.ndarray] = {
        "format_version": np.asarray(FORMAT_VERSION),
        "first_index": np.asarray(first_index),
        "eps": np.asarray(sweep.eps, dtype=np.float64),
        "targeted_eps": np.asarray(sweep.targeted_eps, dtype=np.float64),
        "inference_layout": np.asarray(sweep.inference_layout),
    }
    for name in _TENSORS:
        value = getattr(sweep, name)
        if value is not None:
            arrays[name] = value.numpy()
    kept = sorted(sweep.selected or {})
    if kept:
        assert sweep.selected is not None
        arrays["selected_indices"] = np.asarray(kept, dtype=np.int64)
        arrays["selected_inputs"] = torch.stack([sweep.selected[i][0] for i in kept]).numpy()
        arrays["selected_directions"] = torch.stack([sweep.selected[i][1] for i in kept]).numpy()
    robust = sweep.robust
    if robust is not None:
        arrays["robust_first_index"] = np.asarray(robust.first_index)
        for spec, matrix in robust.robust.items():
            arrays[f"robust/{spec.name}"] = matrix.numpy()
        for spec, matrix in robust.targeted_success.items():
            arrays[f"targeted_success/{spec.name}"] = matrix.numpy()
        assert robust.counts is not None  # RobustSweep makes them
        for item in fields(SanityCounts):
            value = getattr(robust.counts, item.name)
            if value is not None:
                arrays[f"counts/{item.name}"] = value.numpy()
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def sweep_from_npz(data: bytes, config: EvaluationConfig) -> tuple[SweepResult, int]:
    """(the sweep, its first sample's index) from sweep_to_npz's bytes, for a job run with `config`."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise ShardError(f"a shard's stored outcomes cannot be read ({error})") from None
    if int(arrays.get("format_version", -1)) != FORMAT_VERSION:
        raise ShardError("a shard's stored outcomes are in an unknown format")

    def tensor(name: str) -> torch.Tensor | None:
        return torch.from_numpy(arrays[name]) if name in arrays else None

    eps = tuple(float(e) for e in arrays["eps"])
    targeted_eps = tuple(float(e) for e in arrays["targeted_eps"])
    if eps != config.eps or targeted_eps != (config.sweep_targeted_eps if config.targeted else ()):
        raise ShardError("a shard's stored outcomes belong to other ε lists than the job's")
    selected: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    if "selected_indices" in arrays:
        pairs = zip(arrays["selected_inputs"], arrays["selected_directions"], strict=True)
        for index, (x, direction) in zip(arrays["selected_indices"].tolist(), pairs, strict=True):
            selected[int(index)] = (torch.from_numpy(x), torch.from_numpy(direction))
    values = {name: tensor(name) for name in _TENSORS}
    sweep = SweepResult(
        eps=eps,
        targeted_eps=targeted_eps,
        policy=config.targeted,
        selected=selected,
        robust=_robust(arrays, config, eps, targeted_eps) if "robust_first_index" in arrays else None,
        inference_layout=str(arrays.get("inference_layout", "model")),
        **values,  # type: ignore[arg-type]  # labels … conf are always there (run_sweep fills them)
    )
    return sweep, int(arrays["first_index"])


def _robust(
    arrays: dict[str, np.ndarray],
    config: EvaluationConfig,
    eps: tuple[float, ...],
    targeted_eps: tuple[float, ...],
) -> RobustSweep:
    """The RobustSweep run_sweep made for `config`, holding the stored matrices."""
    n = len(arrays["labels"])
    robust = RobustSweep(
        config.attack_specs,
        n,
        eps,
        targeted_eps,
        config.worst_case_attacks,
        config.seed,
        config.sanity_probe,
        first_index=int(arrays["robust_first_index"]),
    )
    stored = sorted(name.split("/", 1)[1] for name in arrays if name.startswith("robust/"))
    if stored != sorted(spec.name for spec in robust.attacks):
        raise ShardError("a shard's stored outcomes belong to other attacks than the job's")
    robust.robust = {spec: torch.from_numpy(arrays[f"robust/{spec.name}"]) for spec in robust.attacks}
    robust.targeted_success = {
        spec: torch.from_numpy(arrays[f"targeted_success/{spec.name}"]) for spec in robust.targeted_success
    }
    counts = {item.name: arrays.get(f"counts/{item.name}") for item in fields(SanityCounts)}
    loaded = {name: None if value is None else torch.from_numpy(value) for name, value in counts.items()}
    robust.counts = SanityCounts(**loaded)  # type: ignore[arg-type]  # the four required flags are always stored
    return robust
