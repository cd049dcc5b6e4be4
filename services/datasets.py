"""Datasets: bundled digits, streamed .npz arrays and ImageFolder directories or zips, all validated on load."""

from __future__ import annotations

import functools
import hashlib
import operator
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from services.dataset_types import DatasetInfo, Reader
from services.errors import DatasetError
from services.image_folder import load_image_folder
from services.limits import MAX_CLASSES
from services.npz_stream import load_npz
from services.safe_zip import ZipLimits

# read at each load_dataset call (not bound at import) so they can be tuned or monkeypatched here
MAX_ZIP_UNCOMPRESSED_BYTES = 2 * 1024**3
MAX_ZIP_MEMBERS = 200_000
ZIP_BOMB_RATIO = 200  # a member is suspicious when it inflates more than this …
ZIP_BOMB_MIN_BYTES = 10 * 1024**2  # … and is also bigger than this (tiny files may compress very well)
DIGITS_TEST_SIZE = 360
SUPPORTED_FORMATS = (
    "'digits' (or 'digits:train' / 'digits:test'), a .npz file holding arrays x and y, "
    "an ImageFolder directory (one sub-folder of images per class) or the same packed as a .zip"
)


class Dataset:
    """A validated dataset: labels held in memory, inputs read batch by batch in a fixed order."""

    def __init__(self, info: DatasetInfo, labels: np.ndarray, reader: Reader, resize_to: int | None) -> None:
        self.info = info
        self._labels = labels
        self._reader = reader
        self._resize_to = resize_to

    def __len__(self) -> int:
        return self.info.num_samples

    def labels(self, limit: int | None = None) -> torch.Tensor:
        """The first `limit` labels (all by default) as int64."""
        return torch.from_numpy(self._labels[: self._count(limit)].copy())

    def batches(
        self, batch_size: int, limit: int | None = None, *, start: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) batches of the samples from `start` up to the first `limit`; x float32 in [0, 1], y int64.

        A batch starts at `start` + a multiple of `batch_size`, so a range that begins on a batch boundary
        yields exactly the batches the whole dataset would (what makes a shard's numbers the unsharded ones).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DatasetError(f"batch size must be an integer ≥ 1, got {batch_size!r}")
        count = self._count(limit)
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= count:
            raise DatasetError(f"the first sample {start!r} is outside the {count} samples")
        return self._batches(batch_size, count, start)

    def _batches(
        self, batch_size: int, count: int, start: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x in self._reader.iter_batches(count, batch_size, start):
            stop = start + len(x)
            yield self._finish(x), torch.from_numpy(self._labels[start:stop].copy())
            start = stop

    def take(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A few samples by index (any order, repeats allowed)."""
        try:
            wanted = [operator.index(i) for i in indices]
        except TypeError:
            raise DatasetError(f"sample indices must be integers, got {list(indices)!r}") from None
        bad = [i for i in wanted if not 0 <= i < len(self)]
        if bad:
            raise DatasetError(f"sample index {bad[0]} is out of range: the dataset has {len(self)} samples")
        unique = sorted(set(wanted))
        if not unique:
            c, h, w = self.info.input_shape
            return torch.empty(0, c, h, w), torch.empty(0, dtype=torch.int64)
        rows = self._reader.read(unique)
        position = {index: k for k, index in enumerate(unique)}
        x = rows[[position[i] for i in wanted]]
        return self._finish(x), torch.from_numpy(self._labels[wanted].copy())

    def _count(self, limit: int | None) -> int:
        if limit is None:
            return len(self)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise DatasetError(f"limit must be an integer ≥ 1, got {limit!r}")
        return min(limit, len(self))

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        if self._resize_to is not None and tuple(x.shape[-2:]) != (self._resize_to, self._resize_to):
            size = (self._resize_to, self._resize_to)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
        return x.contiguous()


class _ArrayReader(Reader):
    def __init__(self, x: np.ndarray) -> None:
        self._x = x

    def iter_batches(self, count: int, batch_size: int, start: int = 0) -> Iterator[torch.Tensor]:
        for first in range(start, count, batch_size):
            yield torch.from_numpy(self._x[first : min(first + batch_size, count)].copy())

    def read(self, indices: list[int]) -> torch.Tensor:
        return torch.from_numpy(self._x[indices].copy())


# --------------------------------------------------------------------------- digits


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 1797 8×8 digits, upsampled: x float32 (N, 1, 32, 32) in [0, 1], y int64 (N,)."""
    if split not in ("train", "test"):
        raise DatasetError(f"unknown digits split {split!r}; choose 'train' or 'test'")
    x, y, _ = _digits_arrays(split)
    return x.copy(), y.copy()


@functools.lru_cache(maxsize=2)
def _digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The split's arrays (read-only) and their sha256, built once per process: a worker running the shards
    of a job on the digits opens them for every shard, and parsing and hashing them took 23 ms each time."""
    from sklearn.datasets import load_digits  # imported here: sklearn is slow to import and rarely needed

    bunch = load_digits()
    # fixed forever, since the demo models were trained on it: the permutation's last 360 are "test"
    order = np.random.RandomState(0).permutation(len(bunch.target))
    chosen = order[-DIGITS_TEST_SIZE:] if split == "test" else order[:-DIGITS_TEST_SIZE]
    small = torch.from_numpy(bunch.images[chosen].astype(np.float32) / 16.0).unsqueeze(1)
    x = np.ascontiguousarray(
        F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1).numpy(),
        dtype=np.float32,
    )
    y = bunch.target[chosen].astype(np.int64)
    digest = hashlib.sha256(x.tobytes())
    digest.update(y.tobytes())
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y, digest.hexdigest()


def _load_digits(source: str, split: str) -> tuple[DatasetInfo, np.ndarray, Reader]:
    _, _, suffix = source.strip().lower().partition(":")
    split = suffix or split
    if split not in ("train", "test"):
        raise DatasetError(f"unknown digits split {split!r} in {source!r}; use digits:train or digits:test")
    x, y, digest = _digits_arrays(split)
    names = tuple(str(k) for k in range(10))
    info = DatasetInfo(source, "digits", digest, len(y), (1, 32, 32), 10, names)
    return info, y.copy(), _ArrayReader(x)


def warm_up() -> None:
    """Import what the first digits load would (sklearn takes most of a second): for long-lived workers."""
    import sklearn.datasets  # noqa: F401, PLC0415


# --------------------------------------------------------------------------- entry point


def load_dataset(
    source: str | os.PathLike[str],
    *,
    image_size: int | None = None,
    split: str = "test",
    max_zip_bytes: int | None = None,
    max_zip_members: int | None = None,
) -> Dataset:
    """Open and validate a dataset; `split` only applies to digits, `image_size` resizes to a square."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)):
        raise DatasetError(f"image size must be a whole number of pixels, got {image_size!r}")
    if image_size is not None and not 1 <= image_size <= 4096:
        raise DatasetError(f"image size {image_size} is outside 1..4096 pixels")
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r}; choose 'train' or 'test'")
    text = os.fspath(source)
    if isinstance(source, str) and text.strip().lower().split(":")[0] == "digits":
        info, labels, reader = _load_digits(text, split)
    else:
        path = Path(text).expanduser()
        limits = ZipLimits(
            MAX_ZIP_UNCOMPRESSED_BYTES if max_zip_bytes is None else max_zip_bytes,
            MAX_ZIP_MEMBERS if max_zip_members is None else max_zip_members,
            ZIP_BOMB_RATIO,
            ZIP_BOMB_MIN_BYTES,
        )
        try:
            info, labels, reader = _load_path(text, path, image_size, limits)
        except OSError as exc:
            raise DatasetError(f"cannot read dataset {text}: {exc.strerror or exc}") from None
    if image_size is not None and info.input_shape[1:] != (image_size, image_size):
        shape = (info.input_shape[0], image_size, image_size)
        info = replace(info, input_shape=shape)
    _check_class_count(text, labels)
    return Dataset(info, labels, reader, image_size)


def _check_class_count(source: str, labels: np.ndarray) -> None:
    """Labels are class indices 0..K-1 with K ≤ MAX_CLASSES (the count is stored as K = max label + 1)."""
    if labels.size and int(labels.max()) >= MAX_CLASSES:
        index = int(labels.argmax())
        raise DatasetError(
            f"{source}: label y[{index}] is {int(labels[index])}, so the dataset would have "
            f"{int(labels[index]) + 1} classes; at most {MAX_CLASSES} are supported (labels 0..{MAX_CLASSES - 1}): "
            "labels must be class indices, not ids or hashes"
        )


def _load_path(
    text: str, path: Path, image_size: int | None, limits: ZipLimits
) -> tuple[DatasetInfo, np.ndarray, Reader]:
    if not path.exists():
        raise DatasetError(f"dataset {text!r} not found. Supported: {SUPPORTED_FORMATS}")
    if path.is_dir():
        return load_image_folder(text, path, image_size, limits)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(text, path, limits)
    if suffix == ".zip":
        return load_image_folder(text, path, image_size, limits)
    raise DatasetError(
        f"unsupported dataset file {text!r} ({suffix or 'no extension'}). Supported: {SUPPORTED_FORMATS}"
    )
