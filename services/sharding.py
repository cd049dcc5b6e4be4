"""How a job's samples are cut into shards: whole batches, so that every shard sees the batches (and hence
computes the numbers) of the unsharded run."""

from __future__ import annotations

import math

from services.errors import ConfigError


def batch_count(num_samples: int, batch_size: int) -> int:
    return math.ceil(num_samples / batch_size)


def check_shards(shards: int, num_samples: int, batch_size: int) -> None:
    """Refuse a shard count the samples cannot be cut into (every shard holds at least one whole batch)."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"shards must be a whole number ≥ 1, got {shards!r}")
    if shards > num_samples:
        raise ConfigError(
            f"shards {shards} is more than the {num_samples} samples to evaluate: a shard holds at least one sample"
        )
    batches = batch_count(num_samples, batch_size)
    if shards > batches:
        raise ConfigError(
            f"{shards} shards of {num_samples} samples in batches of {batch_size}: at most {batches} "
            "(a shard holds whole batches, so that a sharded run computes exactly what an unsharded one "
            "does); use fewer shards or a smaller batch_size"
        )


def shard_count(shards: int | None, num_samples: int, batch_size: int, auto_samples: int) -> int:
    """The number of shards: the one asked for (checked), else one per `auto_samples` samples (0: never
    split), at most one per batch."""
    if shards is not None:
        check_shards(shards, num_samples, batch_size)
        return shards
    if auto_samples <= 0 or num_samples <= auto_samples:
        return 1
    return min(math.ceil(num_samples / auto_samples), batch_count(num_samples, batch_size))


def shard_ranges(num_samples: int, shards: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each shard: consecutive runs of whole batches, as even as batches allow."""
    check_shards(shards, num_samples, batch_size)
    batches = batch_count(num_samples, batch_size)
    bounds = [min(batch_size * (batches * i // shards), num_samples) for i in range(shards + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def planned_ranges(
    shards: int | None, available: int, limit: int | None, batch_size: int, auto_samples: int
) -> list[tuple[int, int]]:
    """The shards of a job over the first `limit` of `available` samples (a ConfigError when impossible)."""
    num_samples = min(available, limit) if limit else available
    if num_samples < 1:
        raise ConfigError("the dataset is empty: there is nothing to evaluate")
    return shard_ranges(num_samples, shard_count(shards, num_samples, batch_size, auto_samples), batch_size)
