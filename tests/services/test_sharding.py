"""Sharded evaluation: shard ranges, and a merged report equal to the unsharded one (outcomes, metrics and
features at depth)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.checkpoints import load_model
from services.datasets import load_dataset
from services.errors import ConfigError, ShardError
from services.evaluation import evaluate, finish, sweep_range
from services.shard_outcomes import sweep_from_npz, sweep_to_npz
from services.sharding import check_shards, shard_count, shard_ranges
from services.specs import EvaluationConfig
from services.sweep import SweepResult

# FGSM + PGD + targeted (random targets: per-sample offsets drawn over every sample) + the sanity probes
OPTIONS = {
    "eps": (0.0, 2 / 255, 8 / 255, 32 / 255),
    "attacks": ("fgsm", "pgd"),
    "steps": 3,
    "targeted": "random",
    "limit": 70,
    "batch_size": 8,
    "cam_samples": 5,
    "triptychs": 3,
    "seed": 7,
    "save_adversarial": True,
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def loaded():
    return load_model("demo:gap-cnn", input_shape=(1, 32, 32))


@pytest.fixture(scope="module")
def unsharded(loaded, digits, tmp_path_factory):
    report = evaluate(loaded, digits, EvaluationConfig(**OPTIONS, shards=1))
    out = tmp_path_factory.mktemp("unsharded")
    report.write(out)
    return out


def _comparable(folder) -> tuple[dict, dict[str, np.ndarray]]:
    document = json.loads((folder / "report.json").read_text())
    document.pop("timing")
    document["config"].pop("shards")
    with np.load(folder / "outcomes.npz") as archive:
        arrays = {name: archive[name] for name in archive.files}
    return document, arrays


def _assert_same(folder, reference) -> None:
    document, arrays = _comparable(folder)
    expected, expected_arrays = _comparable(reference)
    assert (
        document == expected and document["features"]["depths"]
    )  # features too: computed once, at the merge
    assert arrays.keys() == expected_arrays.keys()
    for name, array in arrays.items():
        np.testing.assert_array_equal(array, expected_arrays[name], err_msg=name)
    for name in ("adversarial.npz", "gradcam.npz", "features.npz"):
        with np.load(folder / name) as got, np.load(reference / name) as want:
            assert got.files == want.files
            for key in got.files:
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name}:{key}")


def test_shard_ranges_are_whole_batches_covering_every_sample():
    assert shard_ranges(70, 3, 8) == [(0, 24), (24, 48), (48, 70)]
    assert shard_ranges(10, 1, 128) == [(0, 10)]
    ranges = shard_ranges(1000, 7, 16)
    assert ranges[0][0] == 0 and ranges[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert all(start % 16 == 0 for start, _ in ranges)
    sizes = [stop - start for start, stop in ranges[:-1]]
    assert max(sizes) - min(sizes) <= 16


@pytest.mark.parametrize(
    ("shards", "message"),
    [
        (0, "≥ 1"),
        (True, "whole number"),
        (71, "more than the 70 samples"),
        (10, "at most 9"),
    ],
)
def test_shard_counts_that_cannot_cut_the_samples_are_refused(shards, message):
    with pytest.raises(ConfigError, match=message):
        check_shards(shards, 70, 8)


def test_shards_option_is_bounded():
    with pytest.raises(ConfigError, match="shards must be between 1 and 10000"):
        EvaluationConfig(shards=0)


def test_automatic_shard_count():
    assert shard_count(None, 50_000, 128, 10_000) == 5
    assert shard_count(None, 10_000, 128, 10_000) == 1
    assert shard_count(None, 50_000, 128, 0) == 1  # 0 turns the automatic split off
    assert shard_count(None, 300, 128, 100) == 3  # at most one shard per batch
    assert shard_count(4, 300, 8, 10_000) == 4


def test_sharded_in_process_run_equals_the_unsharded_report(loaded, digits, unsharded, tmp_path):
    evaluate(loaded, digits, EvaluationConfig(**OPTIONS, shards=3)).write(tmp_path)
    _assert_same(tmp_path, unsharded)


def test_shards_through_their_stored_outcomes_merge_into_the_unsharded_report(
    loaded, digits, unsharded, tmp_path
):
    """The service's path: each shard's sweep as .npz bytes, read back, concatenated in order, finished once."""
    config = EvaluationConfig(**OPTIONS, shards=3)
    stored = []
    for start, stop in reversed(shard_ranges(70, 3, 8)):  # shards finish in any order
        stored.append(sweep_to_npz(sweep_range(loaded, digits, config, start, stop), start))
    parts = sorted((sweep_from_npz(data, config) for data in stored), key=lambda part: part[1])
    merged = SweepResult.concat([sweep for sweep, _ in parts])
    finish(loaded, digits, config, merged, sweep_seconds=1.0).write(tmp_path)
    _assert_same(tmp_path, unsharded)


def test_stored_outcomes_of_other_options_are_refused(loaded, digits):
    config = EvaluationConfig(**OPTIONS)
    data = sweep_to_npz(sweep_range(loaded, digits, config, 0, 8), 0)
    with pytest.raises(ShardError, match="other ε lists"):
        sweep_from_npz(data, EvaluationConfig(**{**OPTIONS, "eps": (0.0, 0.1)}))
    with pytest.raises(ShardError, match="cannot be read"):
        sweep_from_npz(b"not an npz", config)


def test_range_batches_equal_the_whole_dataset_batches(digits):
    whole = [x for x, _ in digits.batches(8, limit=40)]
    ranged = [x for x, _ in digits.batches(8, limit=40, start=16)]
    assert len(ranged) == 3
    for got, want in zip(ranged, whole[2:], strict=True):
        assert got.equal(want)
